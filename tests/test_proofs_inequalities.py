"""50-digit certificates of the inequalities T4 and T5 (proofs/certificates/inequalities.py) on
Hypothesis instances, adversarial kinds included (η → 2, η → 0, β → 1, one-hot keys where T5 is
attained, nearly collinear keys and nearly singular comparators); altered statements are rejected."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # proofs/ is not an installed package

import numpy as np
import pytest
from hypothesis import find, given, settings

import osdn_ref
from proofs.certificates.inequalities import (T4_ALTERED, T5_ALTERED, T5Instance, check_t4, check_t5, learner_mp,
                                              summarize, t5_assumptions)
from proofs.certificates.instances import t4_instances, t5_instances, t5_short_key_instances
from proofs.certificates.report import t5_assumption_drops

_SMALLEST = {}


def _record(statement, margins):
    w = summarize(margins)
    if w is not None and (statement not in _SMALLEST or w.rel < _SMALLEST[statement].rel):
        _SMALLEST[statement] = w


@given(t4_instances())
def test_t4_regret_bound_at_50_digits(inst):
    ms = check_t4(inst)
    _record("T4", ms)
    for m in ms:
        assert m.holds, m


@given(t5_instances())
def test_t5_contraction_sum_bound_at_50_digits(inst):
    assert all(t5_assumptions(inst).values())
    m = check_t5(inst)
    _record("T5", [m])
    assert m.holds, m


def test_t5_bound_is_attained():
    """One-hot keys, β = 1, η = 1, every coordinate visited: Σρ² equals ‖d_0 − d*‖²/(η(2 − η)) exactly,
    so T5 cannot be tightened by any constant factor (and the 0.9× alteration fails here)."""
    K = 3
    inst = T5Instance(k=np.eye(K)[[0, 1, 2, 0, 1]], d_star=np.ones(K), eta=1.0, d0=np.array([0.5, 3.0, -1.0]),
                      kind="one_hot")
    m = check_t5(inst)
    assert m.holds and abs(m.margin) < 1e-40 and m.bound == pytest.approx(0.25 + 4 + 4)
    assert not check_t5(inst, "T5 with 0.9 × the bound").holds


@pytest.mark.parametrize("name", list(T4_ALTERED))
def test_t4_alterations_rejected(name):
    inst = find(t4_instances(), lambda i: not all(m.holds for m in check_t4(i, name)),
                settings=settings(max_examples=400, database=None, derandomize=True))
    assert not all(m.holds for m in check_t4(inst, name)) and all(m.holds for m in check_t4(inst))


@pytest.mark.parametrize("name", list(T5_ALTERED))
def test_t5_alterations_rejected(name):
    inst = find(t5_instances(), lambda i: not check_t5(i, name).holds,
                settings=settings(max_examples=400, database=None, derandomize=True))
    assert not check_t5(inst, name).holds and check_t5(inst).holds


@pytest.mark.parametrize("name", list(t5_assumption_drops(T5Instance(np.eye(1), np.ones(1), 1.0, np.zeros(1)))))
def test_t5_fails_without_each_assumption(name):
    """Dropping one assumption of T5 (0 < η < 2, β ≤ 1, unit keys) breaks the bound on some instance."""
    inst = find(t5_instances(kinds=("one_hot", "random")), lambda i: not check_t5(t5_assumption_drops(i)[name]).holds,
                settings=settings(max_examples=400, database=None, derandomize=True))
    dropped = t5_assumption_drops(inst)[name]
    assert not all(t5_assumptions(dropped).values())
    assert check_t5(inst).holds and not check_t5(dropped).holds


@given(t4_instances(kinds=("random", "collinear")))
@settings(max_examples=5)
def test_float64_reference_matches_the_certificate(inst):
    """osdn_ref's recurrence (trace d̄) and regret_bound agree with the 50-digit learner and terms."""
    import mpmath

    T, K = inst.k.shape
    rng = np.random.default_rng(0)
    _, _, _, tr = osdn_ref.recurrent_osdn(rng.standard_normal((1, T, 1, K)), inst.k[None, :, None],
                                          rng.standard_normal((1, T, 1, 2)), inst.beta[None, :, None],
                                          eta=inst.eta, initial_precond=inst.d0[None, None], d_min=-np.inf,
                                          return_trace=True)
    d_bar = tr["d_bar"][0, :, 0]
    with mpmath.workdps(50):
        pts, _ = learner_mp([[mpmath.mpf(float(x)) for x in r] for r in inst.k], [mpmath.mpf(float(b)) for b in inst.beta],
                            mpmath.mpf(inst.eta), [mpmath.mpf(float(x)) for x in inst.d0])
    ref = np.array([[float(x) for x in p] for p in pts])
    assert np.max(np.abs(d_bar - ref)) <= 1e-8 * max(1.0, np.max(np.abs(ref)))
    z = inst.comparators["random"]
    r64 = osdn_ref.regret_bound(inst.k, inst.beta, d_bar, inst.d0, z, inst.eta)
    mp_margin = check_t4(inst)[2]  # comparators: best_fixed, start, random
    assert r64["bound"] == pytest.approx(mp_margin.bound, rel=1e-7, abs=1e-9)
    assert r64["regret"] == pytest.approx(mp_margin.value, rel=1e-6, abs=1e-7 * max(1.0, abs(mp_margin.bound)))


@given(t5_short_key_instances())
def test_t5_extends_to_keys_of_norm_at_most_one(inst):
    """The extension stated in proofs/T5.md: with ‖k_t‖ ≤ 1 (and the other assumptions) the bound holds."""
    assert t5_assumptions(inst)["beta_le_1"] and t5_assumptions(inst)["eta_in_0_2"]
    assert np.all(np.linalg.norm(inst.k, axis=-1) <= 1.0)
    m = check_t5(inst)
    _record("T5 (‖k‖ ≤ 1)", [m])
    assert m.holds, m


def test_print_smallest_margins(capsys):
    """Last in the file: prints the smallest margins the properties above saw in this run."""
    with capsys.disabled():
        for s, m in sorted(_SMALLEST.items()):
            print(f"\n[certificates] smallest {s} margin this run: relative {m.rel:.3e}, absolute {m.margin:.3e} "
                  f"({m.label}, {m.meta})")
