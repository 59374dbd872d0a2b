"""Properties of the recall harness of ``osdn recall`` (osdn_ref.recall, issue 5, mechanism part).

Each test can fail: it compares the harness against an independent computation (the delta rule written
as its own loop, exact memories, closed forms on axis-aligned keys) or against what T3/T5 guarantee.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from osdn_ref import recall as R

GEOS = st.sampled_from(R.GEOMETRIES)
PRES = st.sampled_from(R.PRESENTATIONS)


def _batch(stream, H=1):
    """[T, K] stream -> [1, T, H, K] with every head reading the same tokens."""
    k = np.repeat(stream["k"][None, :, None, :], H, axis=2)
    v = np.repeat(stream["v"][None, :, None, :], H, axis=2)
    return k, v


@given(geo=GEOS, pres=PRES, n=st.integers(1, 12), K=st.integers(2, 8), seed=st.integers(0, 2**16),
       beta=st.floats(0.05, 1.0), apf=st.booleans(), clip=st.booleans())
def test_eta_zero_is_an_independent_delta_rule_loop(geo, pres, n, K, seed, beta, apf, clip):
    """η = 0 through the harness (E1–E8, whatever α and d_max ≥ 1) equals S ← S + β(v − Sk)kᵀ (D1)."""
    s = R.make_stream(geo, pres, n, K, 3, seed)
    k, v = _batch(s)
    T = k.shape[1]
    alpha = np.full((1, T, 1), 0.9 if apf else 1.0)
    h, d, _ = R.write_memory(k, v, np.full((1, T, 1), beta), np.zeros(1), alpha=alpha,
                             d_max=2.0 if clip else None)
    np.testing.assert_allclose(h[0, 0], R.delta_rule_reference(s["k"], s["v"], beta), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(d, 1.0)  # the learner never moves (E8 with η = 0)


def test_recall_ratio_of_perfect_and_empty_memory():
    """A perfect memory has ratio 0, an empty one ratio 1; orthonormal keys written once at β = 1 by
    DeltaNet are stored exactly (each write fits its token, T3 with ρ = 0, and does not touch the others)."""
    rng = np.random.default_rng(0)
    V = rng.standard_normal((5, 4))
    assert R.recall_residual_ratio(V, V) == 0.0
    assert R.recall_residual_ratio(np.zeros_like(V), V) == pytest.approx(1.0, abs=1e-15)
    K, N = 8, 6
    Q, _ = np.linalg.qr(rng.standard_normal((K, K)))
    keys, vals = Q[:N], rng.standard_normal((N, 3))
    h, _, _ = R.write_memory(keys[None, :, None], vals[None, :, None], np.ones((1, N, 1)), np.zeros(1))
    assert R.recall_residual_ratio(R.read_back(h[0, 0], keys), vals) < 1e-13


@given(K=st.integers(2, 10), frac=st.floats(0.2, 1.0), reps=st.integers(2, 6), beta=st.floats(0.05, 0.95),
       eta=st.floats(0.1, 1.9), seed=st.integers(0, 2**16))
def test_jrt_on_axis_keys_osdn_below_deltanet_exactly_as_T3_T5_say(K, frac, reps, beta, eta, seed):
    """Consistent stream, unit keys, β < 1: N ≤ K distinct axis keys ±e_i presented ``reps`` times.

    Writes along different axes do not interfere (k̃ = p ⊙ k stays on the axis), so after R passes key i's
    residual is the product of its R contraction factors (T3). DeltaNet: (1 − β)^R. OSDN: the comparator
    d* = 1/β · 1 exists (T5) and E8 gives ρ ← ρ (1 − ηβ²) per visit, so the product is
    (1 − β)^R Π_{r<R} (1 − ηβ²)^r: strictly smaller for R ≥ 2 and 0 < η < 2.
    """
    rng = np.random.default_rng(seed)
    N = max(1, int(round(frac * K)))
    keys = np.eye(K)[rng.permutation(K)[:N]] * rng.choice([-1.0, 1.0], size=(N, 1))
    vals = rng.standard_normal((N, 3))
    k = np.tile(keys, (reps, 1))[None, :, None]
    v = np.tile(vals, (reps, 1))[None, :, None]
    k, v = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)  # head 0: DeltaNet, head 1: OSDN
    T = k.shape[1]
    h, _, _ = R.write_memory(k, v, np.full((1, T, 2), beta), np.array([0.0, eta]))
    ratio = R.recall_residual_ratio(R.read_back(h[0], keys[None]), vals[None])
    dn = (1 - beta) ** reps
    osdn = dn * math.prod((1 - eta * beta ** 2) ** r for r in range(reps))
    assert ratio[0] == pytest.approx(dn, rel=1e-9, abs=1e-14)
    assert ratio[1] == pytest.approx(abs(osdn), rel=1e-9, abs=1e-14)
    assert ratio[1] < ratio[0]


@given(geo=st.sampled_from(("iso", "aniso-dir", "corr")), pres=PRES, n=st.integers(2, 24),
       beta=st.floats(0.1, 1.0), eta=st.floats(0.1, 1.9), seed=st.integers(0, 2**16))
def test_T5_bound_on_harness_streams(geo, pres, n, beta, eta, seed):
    """Unit-key streams (α ≡ 1, no clip): Σ_t ρ_t(d̄_{t−1})² ≤ ‖d_0 − d*‖² / (η(2 − η)) with
    d* = 1/β · 1 (T5), and if that bound is below DeltaNet's Σ (1 − β)² = T(1 − β)², OSDN's token-local
    residuals are smaller on average."""
    K = 6
    s = R.make_stream(geo, pres, n, K, 2, seed)
    np.testing.assert_allclose(np.linalg.norm(s["k"], axis=1), 1.0, rtol=1e-12)
    d_star = R.comparator(s["keys"], beta)
    assert d_star is not None
    np.testing.assert_allclose(beta * s["keys"] ** 2 @ np.full(K, 1.0 / beta), 1.0, rtol=1e-12)  # d* = 1/β · 1
    k, v = _batch(s, H=2)
    T = k.shape[1]
    _, _, rho = R.write_memory(k, v, np.full((1, T, 2), beta), np.array([0.0, eta]), want_rho=True)
    bound = K * (1.0 / beta - 1.0) ** 2 / (eta * (2.0 - eta))
    np.testing.assert_allclose(rho[0, :, 0], 1.0 - beta, atol=1e-12)  # DeltaNet: ρ = 1 − β
    osdn = float(np.sum(rho[0, :, 1] ** 2))
    assert osdn <= bound * (1 + 1e-9) + 1e-12
    if beta < 0.999 and bound < 0.99 * T * (1 - beta) ** 2:
        assert osdn < float(np.sum(rho[0, :, 0] ** 2))


@given(geo=GEOS, pres=PRES, n=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_streams(geo, pres, n, seed):
    """Streams are seeded, JRT repeats the same pairs in order, update's targets are the last pass's values,
    unit geometries give unit keys, aniso-scale keys have ‖k‖ ≤ 1 and comparator 1/(βs²) (T5), aniso-drift
    the comparator 1/(βs²) on the first half of the keys and 1/(βs'²) on the second."""
    K, V = 6, 3
    a, b = R.make_stream(geo, pres, n, K, V, seed), R.make_stream(geo, pres, n, K, V, seed)
    for x in ("k", "v", "keys", "targets"):
        np.testing.assert_array_equal(a[x], b[x])
    reps = R._REPEATS[pres]
    assert a["k"].shape == (reps * n, K) and a["v"].shape == (reps * n, V)
    norms = np.linalg.norm(a["keys"], axis=1)
    if geo in ("aniso-scale", "aniso-drift"):
        assert np.all(norms <= 1 + 1e-12)
        beta, h1 = 0.5, (n + 1) // 2 if geo == "aniso-drift" else n
        np.testing.assert_allclose(beta * (a["keys"][:h1] ** 2) @ (1.0 / (beta * a["scales"] ** 2)), 1.0, rtol=1e-10)
        np.testing.assert_allclose(beta * (a["keys"][h1:] ** 2) @ (1.0 / (beta * a["scales2"] ** 2)), 1.0, rtol=1e-10)
        np.testing.assert_array_equal(np.sort(a["scales"]), np.sort(a["scales2"]))
    else:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    last = a["pass_index"] == reps - 1
    # every distinct key appears in the last pass with its target value
    for key, tgt in zip(a["keys"], a["targets"]):
        hit = np.where(np.all(a["k"][last] == key, axis=1))[0]
        assert len(hit) >= 1
        np.testing.assert_array_equal(a["v"][last][hit[0]], tgt)
    if pres.startswith("jrt"):
        for r in range(reps):
            np.testing.assert_array_equal(a["k"][r * n:(r + 1) * n], a["keys"])


def test_run_regime_idle_learner_and_heads():
    """Unit keys at β = 1: ρ_t(1) = 0, so every OSDN head equals DeltaNet (spec §5 remark, E8 idle);
    at β < 1 the heads differ. The ratio is per (seed, β, head)."""
    cfg = R.RecallConfig(K=8, V=4, seeds=(0, 1), betas=(0.5, 1.0), etas=(1.0,))
    res = R.run_regime(cfg, "iso", "jrt2", 1.0)
    assert res["ratio"].shape == (2, 2, 3)
    np.testing.assert_allclose(res["ratio"][:, 1, 1:], res["ratio"][:, 1, :1].repeat(2, axis=1), atol=1e-13)
    assert np.max(np.abs(res["ratio"][:, 0, 1] - res["ratio"][:, 0, 0])) > 1e-6


def test_fast_backend_agrees_with_reference():
    """The same streams through osdn_fast.chunk_osdn (C1–C3, float32; Triton interpreter on the CPU)
    give the reference's (E1–E8, float64) residual ratios and final d, with APF heads and the clip."""
    R._fast_chunk_osdn()  # raises if the kernels cannot be imported: that is a failure, not a skip
    cfg = R.RecallConfig(K=8, V=4, seeds=(0,), betas=(0.5, 1.0), etas=(1.5,))
    for d_max in (None, 3.0):
        ref = R.run_regime(cfg, "aniso-scale", "jrt2", 1.0, d_max=d_max, backend="reference")
        fast = R.run_regime(cfg, "aniso-scale", "jrt2", 1.0, d_max=d_max, backend="fast")
        np.testing.assert_allclose(fast["ratio"], ref["ratio"], rtol=0, atol=2e-5)
        np.testing.assert_allclose(fast["d_final"], ref["d_final"], rtol=0, atol=2e-5)
        assert np.max(np.abs(ref["ratio"][..., 1] - ref["ratio"][..., 0])) > 1e-3  # the learner acted


def test_cli_quick_writes_reports(tmp_path):
    """``osdn recall --quick`` writes recall.{md,json,png}; the json holds every record with its seeds, the
    markdown one sentence per regime, and DeltaNet's records equal the independent loop's ratios."""
    assert R.main(["--quick", "--out", str(tmp_path)]) == 0
    for ext in ("md", "json", "png"):
        assert (tmp_path / f"recall.{ext}").stat().st_size > 0
    data = json.loads((tmp_path / "recall.json").read_text())
    recs = data["records"]
    cfg = data["config"]
    assert {r["geometry"] for r in recs} == set(cfg["geometries"])
    md = (tmp_path / "recall.md").read_text()
    for g in cfg["geometries"]:
        for p in cfg["presentations"]:
            assert f"**{g} / {p}**" in md
    r = next(x for x in recs if x["eta"] == 0.0 and x["geometry"] == "corr" and x["presentation"] == "jrt2")
    for i, seed in enumerate(cfg["seeds"]):
        s = R.make_stream("corr", "jrt2", r["N"], cfg["K"], cfg["V"], seed)
        h = R.delta_rule_reference(s["k"], s["v"], r["beta"])
        assert r["seeds"][i] == pytest.approx(
            float(R.recall_residual_ratio(R.read_back(h, s["keys"]), s["targets"])), rel=1e-5)
