"""The recurrence E1–E8 itself: its special cases (spec §2), the APF reset (E1), the trace, and the
input contract (no mutation, NaN propagation, L2 normalisation)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from osdn_ref import recurrent_osdn
from osdn_ref.verify import deltanet_loop
from strategies import SEQ_ARGS, problems

RTOL = 1e-12  # float64 identities: measured ~1e-15 (reports/verify.json)


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@given(problems(max_T=30, packed=False), st.booleans(), st.sampled_from([(0.0, None), (0.5, 2.0), (1.0, 1.0)]))
def test_eta_zero_with_unit_prior_is_deltanet_or_gated_deltanet(kw, gated, clip):
    """η = 0, d° = 1, α = 1 reproduces an independent (Gated) DeltaNet loop, whatever clip contains 1."""
    g = kw.get("g") if gated else None
    B, T, H, K = kw["q"].shape
    o, h, _ = recurrent_osdn(kw["q"], kw["k"], kw["v"], kw["beta"], g=g, eta=0.0, d_prior=np.ones((H, K)),
                             d_min=clip[0], d_max=clip[1], output_final_state=True)
    o_ref, S_ref = deltanet_loop(kw["q"], kw["k"], kw["v"], kw["beta"], g=g)
    assert rel(o, o_ref) <= RTOL
    assert rel(h, np.swapaxes(S_ref, -1, -2)) <= RTOL


@given(problems(max_T=30, packed=False), st.data())
def test_alpha_zero_resets_the_learner_to_the_prior(kw, data):
    """E1 with α_m = 0: everything from token m on equals a fresh run started from d° with the carried state."""
    B, T, H, K = kw["q"].shape
    m = data.draw(st.integers(0, T - 1))
    alpha = np.array(kw.get("alpha", np.ones((B, T, H))), float)
    alpha[:, m] = 0.0
    kw = dict(kw, alpha=alpha)
    o, h, d = recurrent_osdn(**kw, output_final_state=True)
    head = {n: (x[:, :m] if n in SEQ_ARGS else x) for n, x in kw.items()}
    tail = {n: (x[:, m:] if n in SEQ_ARGS else x) for n, x in kw.items()}
    if m > 0:
        _, hm, _ = recurrent_osdn(**head, output_final_state=True)
        tail["initial_state"] = hm
    tail["initial_precond"] = np.full((B, H, K), 1e3)  # any learner state: α_m = 0 forgets it exactly
    o2, h2, d2 = recurrent_osdn(**tail, output_final_state=True)
    assert rel(o2, o[:, m:]) <= RTOL and rel(h2, h) <= RTOL and rel(d2, d) <= RTOL


@given(problems(max_T=20))
def test_no_input_array_is_modified(kw):
    before = {n: np.array(x, copy=True) for n, x in kw.items() if isinstance(x, np.ndarray)}
    recurrent_osdn(**kw, output_final_state=True, return_trace=True)
    for n, x in before.items():
        assert np.array_equal(kw[n], x, equal_nan=True), n


@pytest.mark.parametrize("name", ["q", "k", "v", "beta", "g", "initial_state"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_propagate_to_the_output(name, bad):
    """Spec §6: NaN or Inf in the inputs reach the outputs; nothing is silently replaced."""
    rng = np.random.default_rng(0)
    B, T, H, K, V = 1, 6, 1, 3, 2
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)),
              v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0.1, 0.9, (B, T, H)),
              g=-rng.uniform(0, 0.2, (B, T, H)), initial_state=rng.standard_normal((B, H, K, V)))
    x = kw[name].copy()
    x.reshape(-1)[0] = bad
    kw[name] = x
    with np.errstate(all="ignore"):
        o, h, _ = recurrent_osdn(**kw, output_final_state=True)
    assert not np.all(np.isfinite(o))
    if name != "q":  # the query only reads the state (E6)
        assert not np.all(np.isfinite(h))


def test_l2norm_replaces_q_and_k_by_their_normalised_versions():
    """With use_qk_l2norm_in_kernel, q and k are replaced by x / sqrt(‖x‖² + 1e-6) before E1–E8."""
    rng = np.random.default_rng(1)
    B, T, H, K, V = 2, 9, 2, 5, 3
    q, k = rng.standard_normal((B, T, H, K)) * 3, rng.standard_normal((B, T, H, K)) * 3
    v, beta = rng.standard_normal((B, T, H, V)), rng.uniform(0, 1, (B, T, H))
    nrm = lambda x: x / np.sqrt(np.sum(x * x, -1, keepdims=True) + 1e-6)
    a = recurrent_osdn(q, k, v, beta, eta=0.7, use_qk_l2norm_in_kernel=True, output_final_state=True)
    b = recurrent_osdn(nrm(q), nrm(k), v, beta, eta=0.7, output_final_state=True)
    for x, y in zip(a, b):
        assert rel(x, y) <= RTOL


@given(problems(max_T=25))
def test_trace_reports_the_quantities_of_e1_to_e8(kw):
    """The trace's p, ρ and feedback are E2, E7 and D3 evaluated at the trace's own d̄ and k."""
    o, h, d, tr = recurrent_osdn(**kw, output_final_state=True, return_trace=True)
    p = np.clip(tr["d_bar"], kw.get("d_min", 0.0), np.inf if kw.get("d_max") is None else kw["d_max"])
    assert np.array_equal(tr["p"], p)
    u = kw["beta"][..., None] * tr["k"] ** 2
    assert np.allclose(tr["rho_played"], 1 - np.sum(u * tr["p"], -1), rtol=0, atol=1e-13)
    assert np.allclose(tr["rho_learner"], 1 - np.sum(u * tr["d_bar"], -1), rtol=0, atol=1e-13)
    kn2 = np.sum(tr["k"] ** 2, -1)
    fb = np.where(kn2 > 0, (tr["rho_learner"] ** 2 - 1) / (2 * np.where(kn2 > 0, kn2, 1)), 0.0)
    assert np.allclose(tr["feedback"], fb, rtol=1e-12, atol=1e-12)
    # D5 / T3 in the trace: post-write residual norm = |ρ_t(p_t)| · pre-write residual norm
    assert np.allclose(tr["residual_post"], np.abs(tr["rho_played"]) * tr["residual_pre"],
                       rtol=1e-10, atol=1e-10 * max(1.0, float(np.max(tr["residual_pre"]))))


def test_the_learner_plays_the_previous_point_not_the_updated_one():
    """E2 plays d̄_{t-1}; a reference that played d_t (after E8) would differ. Here the difference is
    computed in closed form for one token from d_0 = d°: o_1 uses p_1 = d°, not d° + η ρ β k²/‖k‖²."""
    K, V = 3, 2
    k = np.array([0.6, 0.8, 0.0])
    q = np.array([1.0, 0.0, 0.5])
    v = np.array([1.0, -2.0])
    beta, eta = 0.5, 1.0
    o, h, d = recurrent_osdn(q[None, None, None], k[None, None, None], v[None, None, None],
                             np.full((1, 1, 1), beta), eta=eta, scale=1.0, output_final_state=True)
    expected_h = beta * np.outer(k, v)  # S_1ᵀ = β (d° ⊙ k) rᵀ with r = v, d° = 1
    assert np.allclose(h[0, 0], expected_h, atol=1e-15)
    rho = 1 - beta * np.sum(k ** 2)
    assert np.allclose(d[0, 0], 1 + eta * rho * beta * k ** 2 / np.sum(k ** 2), atol=1e-15)
