"""Symbolic certificates (proofs/certificates/identities.py): each identity behind D1–D5, T4 and T5 is
proved for general dimension, and each deliberately altered identity is not proved *and* is disproved by
an exact rational counterexample, so the prover cannot pass everything."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # proofs/ is not an installed package

import pytest
import sympy as sp

from proofs.certificates import identities as I
from proofs.certificates.sums import counterexample, normalize, prove_zero


@pytest.mark.parametrize("name", list(I.CLAIMS))
def test_identity_proved_for_general_dimension(name):
    lhs, rhs = I.CLAIMS[name]()
    assert I.K in (lhs - rhs).free_symbols  # the key length stays a symbol: every K at once
    assert prove_zero(lhs - rhs), f"{name}: not reduced to 0"


@pytest.mark.parametrize("name", list(I.CLAIMS))
def test_identity_holds_at_concrete_points(name):
    """Cross-check of the prover's soundness: the true identity vanishes at concrete rational points."""
    lhs, rhs = I.CLAIMS[name]()
    assert counterexample(lhs - rhs, [I.K, I.V], I.COMPONENTS.get(name), tries=3, seed=1) is None


@pytest.mark.parametrize("name,alt", [(n, a) for n, alts in I.ALTERED.items() for a in alts])
def test_altered_identity_rejected(name, alt):
    lhs, rhs = I.CLAIMS[name](alter=alt)
    assert not prove_zero(lhs - rhs), f"{name} altered by {alt!r} was 'proved'"
    ce = counterexample(lhs - rhs, [I.K, I.V], I.COMPONENTS.get(name), tries=30)
    assert ce is not None, f"{name} altered by {alt!r}: no counterexample found"


def test_every_alteration_changes_the_claim():
    for name, alts in I.ALTERED.items():
        base = I.CLAIMS[name]()
        for alt in alts:
            assert I.CLAIMS[name](alter=alt) != base, (name, alt)


def test_prover_rules_are_not_vacuous():
    """Rule checks on tiny inputs: a sum over a symbolic length is not collapsed into a number, and the
    Kronecker rule picks the right component."""
    j = sp.Symbol("j", integer=True)
    x = sp.IndexedBase("x")
    s = sp.Sum(x[j], (j, 0, I.K - 1))
    assert not prove_zero(s - I.K * x[0])
    assert prove_zero(sp.Sum(x[j] * sp.KroneckerDelta(j, I.a), (j, 0, I.K - 1)) - x[I.a])
    assert prove_zero(sp.Sum(2 * x[j], (j, 0, I.K - 1)) - 2 * sp.Sum(x[I.b], (I.b, 0, I.K - 1)))
    assert not prove_zero(sp.Sum(x[j] ** 2, (j, 0, I.K - 1)) - sp.Sum(x[j], (j, 0, I.K - 1)) ** 2)
    assert normalize(sp.Sum(1, (j, 0, I.K - 1))) == I.K
