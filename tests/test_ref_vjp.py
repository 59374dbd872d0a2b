"""The reverse-time VJP of E1–E8 (``recurrent_osdn_vjp``) equals central finite differences of the
forward for every differentiable input: the oracle of the kernels' backward."""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from osdn_ref import recurrent_osdn, recurrent_osdn_vjp
from osdn_ref.vjp import GRAD_NAMES

EPS = 1e-6
FD_RTOL = 1e-6  # central differences at 1e-6: truncation + rounding ~1e-9 relative (measured ~3e-9)


@st.composite
def fd_problems(draw):
    """Small problems whose inputs sit away from the kinks FD cannot see (clip bounds, α ∈ {0, 1}, η = 0)."""
    B, T, H = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    K, V = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    packed = draw(st.booleans()) and T > 1
    if packed:
        B = 1
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)) * 0.7,
              v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0.1, 0.9, (B, T, H)),
              g=-rng.uniform(0.0, 0.3, (B, T, H)), alpha=rng.uniform(0.1, 0.9, (B, T, H)),
              d_prior=rng.uniform(0.5, 1.5, (H, K)))
    kw["eta"] = float(rng.uniform(0.1, 1.5)) if draw(st.booleans()) else rng.uniform(0.1, 1.5, H)
    N = B
    if packed:
        cut = draw(st.integers(1, T - 1))
        kw["cu_seqlens"] = np.array([0, cut, T])
        N = 2
    kw["initial_state"] = rng.standard_normal((N, H, K, V))
    kw["initial_precond"] = rng.uniform(0.3, 1.7, (N, H, K))
    if draw(st.booleans()):
        kw["d_min"], kw["d_max"] = 0.8, 1.2  # clip active on some coordinates
    kw["use_qk_l2norm_in_kernel"] = draw(st.booleans())
    return kw


def central_differences(kw, name, cot):
    do, dh, dd = cot

    def loss(x):
        o, h, d = recurrent_osdn(**{**kw, name: x}, output_final_state=True)
        return float(np.sum(o * do) + np.sum(h * dh) + np.sum(d * dd))

    x = np.asarray(kw[name], float)
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += EPS
        xm[idx] -= EPS
        fd[idx] = (loss(xp) - loss(xm)) / (2 * EPS)
    return fd


def _clip_is_far(kw, margin=1e-4):
    if "d_max" not in kw:
        return True
    _, _, _, tr = recurrent_osdn(**kw, return_trace=True)
    gap = np.minimum(np.abs(tr["d_bar"] - kw["d_min"]), np.abs(tr["d_bar"] - kw["d_max"]))
    return bool(np.min(gap) > margin)


@given(fd_problems(), st.integers(0, 2**32 - 1))
def test_vjp_equals_central_differences_for_every_input(kw, seed):
    assume(_clip_is_far(kw))  # a clip bound within FD reach: the derivative is one-sided there
    rng = np.random.default_rng(seed)
    o, h, d = recurrent_osdn(**kw, output_final_state=True)
    cot = rng.standard_normal(o.shape), rng.standard_normal(h.shape), rng.standard_normal(d.shape)
    grads = recurrent_osdn_vjp(**kw, do=cot[0], dht=cot[1], ddt=cot[2], checkpoint=int(rng.integers(1, 5)))
    assert set(grads) == set(GRAD_NAMES)
    # Central differences carry rounding noise ≈ ε · Σ|terms of the loss| / EPS whatever the gradient's
    # size (a gradient near 0, e.g. dq with K = 1 under the L2 norm, is all noise): bound it 100× above.
    noise = 100 * np.finfo(float).eps * float(np.sum(np.abs(o * cot[0])) + np.sum(np.abs(h * cot[1]))
                                              + np.sum(np.abs(d * cot[2]))) / EPS
    for name in GRAD_NAMES:
        fd = central_differences(kw, name, cot)
        assert np.shape(grads[name]) == np.shape(kw[name]), name
        err = float(np.max(np.abs(grads[name] - fd)))
        assert err <= FD_RTOL * float(np.max(np.abs(fd))) + noise, (name, err, noise)


def test_clip_gradient_is_zero_outside_the_bounds():
    """E2: ∂p/∂d̄ = 1 strictly inside [d_min, d_max], 0 outside; with every coordinate clipped the
    output cannot depend on d_prior through the played point of token 1."""
    rng = np.random.default_rng(3)
    B, T, H, K, V = 1, 1, 1, 3, 2
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)),
              v=rng.standard_normal((B, T, H, V)), beta=np.full((B, T, H), 0.5), eta=0.5,
              d_prior=np.full((H, K), 3.0), d_min=0.5, d_max=2.0)
    o = recurrent_osdn(**kw)[0]
    grads = recurrent_osdn_vjp(**kw, do=np.ones_like(o))
    assert np.all(grads["d_prior"] == 0.0)
    kw["d_prior"] = np.full((H, K), 1.0)  # strictly inside: the gradient flows
    grads = recurrent_osdn_vjp(**kw, do=np.ones_like(o))
    assert np.any(grads["d_prior"] != 0.0)


def test_absent_inputs_get_no_gradient():
    rng = np.random.default_rng(4)
    B, T, H, K, V = 1, 4, 2, 3, 2
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)),
              v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)))
    o = recurrent_osdn(**kw)[0]
    grads = recurrent_osdn_vjp(**kw, do=np.ones_like(o))
    for name in ("g", "alpha", "d_prior", "initial_state", "initial_precond"):
        assert grads[name] is None
    assert np.ndim(grads["eta"]) == 0
