"""Exact rational certificate of T1 (proofs/certificates/exact.py): C1–C3 equals E1–E8 *exactly* for
every chunk size, with hard resets (α = 0), decays, an active clip and η > 0; each deliberately wrong
variant of C1–C3 is shown unequal on some instance."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # proofs/ is not an installed package

import pytest
from hypothesis import find, given, settings

from proofs.certificates.exact import ALTERATIONS, chunkwise_exact, exact_problems, recurrent_exact


@given(exact_problems())
def test_chunkwise_equals_recurrence_exactly(kw):
    ref = recurrent_exact(**kw)
    for C in range(1, len(kw["k"]) + 1):
        assert chunkwise_exact(**kw, chunk=C) == ref, f"chunk size {C}"


def test_chaining_exact():
    """T1 (c): [0, T1) then [T1, T) from the carried (S, d) equals one run, exactly."""
    kw = find(exact_problems(max_T=7), lambda kw: len(kw["k"]) >= 4,
              settings=settings(database=None, derandomize=True))
    o, S, d = recurrent_exact(**kw)
    T1 = 2
    first = {n: (x[:T1] if isinstance(x, list) and len(x) == len(kw["k"]) and n not in ("d_prior", "d0", "S0") else x)
             for n, x in kw.items()}
    o1, S1, d1 = recurrent_exact(**first)
    second = {n: (x[T1:] if isinstance(x, list) and len(x) == len(kw["k"]) and n not in ("d_prior", "d0", "S0") else x)
              for n, x in kw.items()}
    second.update(S0=S1, d0=d1)
    o2, S2, d2 = recurrent_exact(**second)
    assert (o1 + o2, S2, d2) == (o, S, d)


@pytest.mark.parametrize("alter", ALTERATIONS)
def test_altered_chunkwise_is_caught(alter):
    def differs(kw):
        ref = recurrent_exact(**kw)
        return any(chunkwise_exact(**kw, chunk=C, alter=alter) != ref for C in range(2, len(kw["k"]) + 1))

    kw = find(exact_problems(), differs, settings=settings(database=None, derandomize=True, max_examples=300))
    assert differs(kw)
