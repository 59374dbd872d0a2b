"""The exact float64 vector–Jacobian product of the recurrence E1–E8 (the oracle of every backward).

A reverse-time pass: the forward run keeps the learner d_{t-1} of every token and the state h
only every ``checkpoint`` tokens; the backward pass recomputes the states of one block of tokens
from its checkpoint and walks it backwards, differentiating E8, E6, E5, E4, E3, E2 and E1 in that
order. Memory is O(T·K + (T/checkpoint + checkpoint)·K·V) per head, not O(T·K·V).

The clip E2 passes the gradient where d_min < d̄ < d_max strictly and blocks it elsewhere
(including on the bounds). Where k_t = 0 the step E8 is absent, and so is its derivative.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .inputs import prepare, segments

__all__ = ["recurrent_osdn_vjp", "GRAD_NAMES"]

GRAD_NAMES = ("q", "k", "v", "beta", "g", "alpha", "eta", "d_prior", "initial_state", "initial_precond")


def _forward_block(h, d, q, k, v, beta, g, alpha, eta, dp, d_min, d_max):
    """E1–E5 and E8 for one token; returns (h_new, d_new)."""
    d_bar = dp + alpha[..., None] * (d - dp)
    k_w = np.clip(d_bar, d_min, d_max) * k
    gamma = np.exp(g)
    r = v - gamma[..., None] * np.einsum("...kv,...k->...v", h, k)
    h_new = gamma[..., None, None] * h + beta[..., None, None] * k_w[..., :, None] * r[..., None, :]
    k2 = k * k
    u = beta[..., None] * k2
    kn2 = k2.sum(-1)
    rho = 1.0 - np.sum(u * d_bar, -1)
    step = np.where(kn2 > 0, eta * rho / np.where(kn2 > 0, kn2, 1.0), 0.0)
    return h_new, d_bar + step[..., None] * u


def _backward_token(h, d, q, k, v, beta, g, alpha, eta, dp, scale, d_min, d_max, dh, dd, do):
    """Reverse of one token. h, d: the state and learner *before* the token; dh, dd: cotangents of
    the state and learner *after* it; do: cotangent of o_t. Returns the cotangents before the token
    and the per-token input gradients."""
    # recompute the forward quantities of this token
    d_bar = dp + alpha[..., None] * (d - dp)  # E1
    p = np.clip(d_bar, d_min, d_max)  # E2
    k_w = p * k  # E3
    gamma = np.exp(g)
    Sk = np.einsum("...kv,...k->...v", h, k)
    r = v - gamma[..., None] * Sk  # E4
    h_new = gamma[..., None, None] * h + beta[..., None, None] * k_w[..., :, None] * r[..., None, :]  # E5
    k2 = k * k
    u = beta[..., None] * k2
    kn2 = k2.sum(-1)
    rho = 1.0 - np.sum(u * d_bar, -1)
    nz = kn2 > 0
    inv = np.where(nz, 1.0 / np.where(nz, kn2, 1.0), 0.0)

    # E6: o = scale hᵀ_new q
    dh = dh + scale * q[..., :, None] * do[..., None, :]
    dq = scale * np.einsum("...kv,...v->...k", h_new, do)
    # E8: d_new = d̄ + (η ρ / n) u
    ud = np.sum(u * dd, -1)
    d_rho = eta * inv * ud
    d_eta = rho * ud * inv
    dn = -eta * rho * ud * inv * inv
    du = (eta * rho * inv)[..., None] * dd - d_rho[..., None] * d_bar
    dd_bar = dd - d_rho[..., None] * u
    dbeta = np.sum(du * k2, -1)
    dk = 2.0 * beta[..., None] * k * du + 2.0 * dn[..., None] * k
    # E5: h_new = γ h + β k̃ rᵀ
    dh_prev = gamma[..., None, None] * dh
    dgamma = np.sum(dh * h, (-2, -1))
    dh_r = np.einsum("...kv,...v->...k", dh, r)  # dh r
    dk_w = beta[..., None] * dh_r
    dr = beta[..., None] * np.einsum("...kv,...k->...v", dh, k_w)
    dbeta = dbeta + np.sum(k_w * dh_r, -1)
    # E4: r = v − γ hᵀ k
    dv = dr
    dgamma = dgamma - np.sum(dr * Sk, -1)
    dh_prev = dh_prev - gamma[..., None, None] * k[..., :, None] * dr[..., None, :]
    dk = dk - gamma[..., None] * np.einsum("...kv,...v->...k", h, dr)
    # E3, E2
    dk = dk + dk_w * p
    inside = (d_bar > d_min) & (d_bar < d_max)
    dd_bar = dd_bar + np.where(inside, dk_w * k, 0.0)
    # E1: d̄ = d° + α (d − d°)
    dd_prev = alpha[..., None] * dd_bar
    dalpha = np.sum(dd_bar * (d - dp), -1)
    ddp = (1.0 - alpha)[..., None] * dd_bar
    return dh_prev, dd_prev, dict(q=dq, k=dk, v=dv, beta=dbeta, g=gamma * dgamma, alpha=dalpha,
                                  eta=d_eta, d_prior=ddp)


def _l2norm_vjp(x_raw: np.ndarray, dy: np.ndarray) -> np.ndarray:
    s = np.sqrt(np.sum(x_raw * x_raw, -1, keepdims=True) + 1e-6)
    y = x_raw / s
    return (dy - y * np.sum(y * dy, -1, keepdims=True)) / s


def recurrent_osdn_vjp(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None,
    use_qk_l2norm_in_kernel=False, cu_seqlens=None, *, do, dht=None, ddt=None, checkpoint=64,
) -> Dict[str, Optional[np.ndarray]]:
    """Exact float64 vector–Jacobian product of OSDN's recurrence E1–E8 (reverse-time pass).

    Differentiates E1 (APF), E2 (clip: gradient strictly inside the bounds), E3, E4, E5, E6 and E8
    with respect to every differentiable input. Same arguments as :func:`osdn_ref.recurrent_osdn`
    (``output_final_state`` is accepted for symmetry and ignored), plus the cotangents.

    Parameters
    ----------
    do : array [B, T, H, V]
        Cotangent of the output o.
    dht : array [N, H, K, V], optional
        Cotangent of the final state (zero if None).
    ddt : array [N, H, K], optional
        Cotangent of the final preconditioner (zero if None).
    checkpoint : int
        Tokens between stored states (memory/recompute trade-off only; the result is the same).

    Returns
    -------
    dict
        Gradients keyed ``q, k, v, beta, g, alpha, eta, d_prior, initial_state, initial_precond``,
        float64, each of its input's shape (``eta``: a 0-d array for a scalar η, [H] otherwise);
        None for an input that was None.
    """
    p = prepare(q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond,
                d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens)
    B, T, H, K, V, N = (getattr(p.dims, a) for a in "BTHKVN")

    def cot(name, x, shape):
        if x is None:
            return np.zeros(shape)
        arr = np.array(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
        return arr

    do_ = cot("do", do, (B, T, H, V))
    dht_ = cot("dht", dht, (N, H, K, V))
    ddt_ = cot("ddt", ddt, (N, H, K))
    grads = {n: np.zeros((B, T, H, K)) for n in ("q", "k")}
    grads["v"] = np.zeros((B, T, H, V))
    for n in ("beta", "g", "alpha", "eta"):
        grads[n] = np.zeros((B, T, H))
    grads["d_prior"] = np.zeros((H, K))
    dh0 = np.zeros((N, H, K, V))
    dd0 = np.zeros((N, H, K))
    eta_ = p.eta[None, :]
    dp = p.d_prior[None]
    args = lambda bsl, t: (p.q[bsl, t], p.k[bsl, t], p.v[bsl, t], p.beta[bsl, t], p.g[bsl, t],
                           p.alpha[bsl, t])
    if p.cu_seqlens is None:
        groups = [(slice(0, B), slice(0, B), 0, T)]
    else:
        groups = [(slice(n, n + 1), slice(0, 1), t0, t1) for n, _, t0, t1 in segments(p)]
    for nsl, bsl, t0, t1 in groups:
        # forward: learner before every token, state at every checkpoint
        h, d = p.h0[nsl].copy(), p.d0[nsl].copy()
        d_before = {}
        h_ckpt = {}
        for t in range(t0, t1):
            if (t - t0) % checkpoint == 0:
                h_ckpt[t] = h
            d_before[t] = d
            h, d = _forward_block(h, d, *args(bsl, t), eta_, dp, p.d_min, p.d_max)
        # backward, block by block from the end
        dh, dd = dht_[nsl].copy(), ddt_[nsl].copy()
        for c0 in sorted(h_ckpt, reverse=True):
            c1 = min(c0 + checkpoint, t1)
            hs = [h_ckpt[c0]]
            for t in range(c0, c1 - 1):
                hs.append(_forward_block(hs[-1], d_before[t], *args(bsl, t), eta_, dp, p.d_min,
                                         p.d_max)[0])
            for t in range(c1 - 1, c0 - 1, -1):
                dh, dd, gt = _backward_token(hs[t - c0], d_before[t], p.q[bsl, t], p.k[bsl, t],
                                             p.v[bsl, t], p.beta[bsl, t], p.g[bsl, t],
                                             p.alpha[bsl, t], eta_, dp, p.scale, p.d_min, p.d_max,
                                             dh, dd, do_[bsl, t])
                for name in ("q", "k", "v", "beta", "g", "alpha", "eta"):
                    grads[name][bsl, t] = gt[name]
                grads["d_prior"] += gt["d_prior"].sum(0)
        dh0[nsl] = dh
        dd0[nsl] = dd
    if p.use_qk_l2norm:
        grads["q"] = _l2norm_vjp(p.q_raw, grads["q"])
        grads["k"] = _l2norm_vjp(p.k_raw, grads["k"])
    eta_grad = grads["eta"].sum((0, 1))
    out: Dict[str, Optional[np.ndarray]] = {
        "q": grads["q"], "k": grads["k"], "v": grads["v"], "beta": grads["beta"],
        "g": grads["g"] if p.has_g else None,
        "alpha": grads["alpha"] if p.has_alpha else None,
        "eta": np.asarray(eta_grad.sum()) if p.eta_is_scalar else eta_grad.reshape(np.shape(eta)),
        "initial_state": dh0 if initial_state is not None else None,
        "initial_precond": dd0 if p.has_initial_precond else None,
    }
    d_prior_grad = grads["d_prior"] + (0.0 if p.has_initial_precond else dd0.sum(0))
    out["d_prior"] = d_prior_grad if p.has_d_prior else None
    return out
