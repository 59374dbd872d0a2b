"""The chunkwise form C1–C3 in float64 NumPy (spec §4): the blueprint of the Triton kernel.

Each chunk of C tokens is processed in three steps, written as a kernel computes them:

* :func:`dscan_chunk` (C1): the preconditioner learner, a one-column gated delta rule (D4), by one
  unit lower-triangular solve per chunk, with the APF products Γ_i/Γ_j taken in log space and
  α = 0 treated as a hard reset (pairs that straddle a zero gate get exactly 0);
* the write keys K̃ = clip(D̄) ⊙ K (C2), elementwise for the whole chunk;
* :func:`state_chunk` (C3): DeltaNet's WY/UT form with asymmetric read key K and write key K̃.

Only the carried (h, δ) cross chunk boundaries, so every chunk size gives the recurrence (T1).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from .inputs import prepare, segments

__all__ = ["chunkwise_osdn", "dscan_chunk", "state_chunk", "gate_ratios"]


def gate_ratios(alpha: np.ndarray):
    """Within-chunk APF products in log space, with α = 0 as a hard reset (C1).

    Parameters
    ----------
    alpha : [..., n]  gates α_1..α_n of one chunk

    Returns
    -------
    ratio : [..., n, n]  Γ_i/Γ_j for j ≤ i (1 on the diagonal), 0 above it and wherever a zero gate
        lies in (j, i]
    gamma : [..., n]  Γ_i = Π_{j≤i} α_j (exactly 0 after a zero gate)
    """
    zero = alpha == 0
    resets = np.cumsum(zero, axis=-1)  # number of zero gates in 1..i
    with np.errstate(divide="ignore"):
        log_a = np.where(zero, 0.0, np.log(np.where(zero, 1.0, alpha)))
    lg = np.cumsum(log_a, axis=-1)
    diff = lg[..., :, None] - lg[..., None, :]
    same = resets[..., :, None] == resets[..., None, :]
    n = alpha.shape[-1]
    lower = np.tril(np.ones((n, n), dtype=bool))
    ratio = np.where(same & lower, np.exp(np.where(same & lower, diff, 0.0)), 0.0)
    gamma = np.where(resets == 0, np.exp(lg), 0.0)
    return ratio, gamma


def dscan_chunk(k, beta, alpha, eta, d_prior, delta0):
    """C1: the learner over one chunk, as a unit lower-triangular solve.

    With u_i = β_i k_i², û_i = u_i / ‖k_i‖² (0 where k_i = 0), a_i = ρ_i(d°) = 1 − ⟨u_i, d°⟩,
    solve (I + L) w = η (a − Γ ⊙ (U δ⁰)), L_ij = η (Γ_i/Γ_j) ⟨u_i, û_j⟩ (j < i); then
    d̄_{i-1} = d° + Γ_i δ⁰ + Σ_{j<i} (Γ_i/Γ_j) w_j û_j (D4).

    Parameters
    ----------
    k : [..., n, K];  beta, alpha : [..., n];  eta : [...];  d_prior : [..., K];  delta0 : [..., K]

    Returns
    -------
    d_bar : [..., n, K]  the learner's points d̄_{i-1} (E1 applied)
    delta_out : [..., K]  δ leaving the chunk
    """
    k2 = k * k
    u = beta[..., None] * k2
    kn2 = np.sum(k2, axis=-1)
    u_hat = np.where(kn2[..., None] > 0, u / np.where(kn2 > 0, kn2, 1.0)[..., None], 0.0)
    a = 1.0 - np.einsum("...ik,...k->...i", u, d_prior)
    ratio, gamma = gate_ratios(alpha)
    n = k.shape[-2]
    strict = np.tril(np.ones((n, n)), -1)
    eta_ = np.asarray(eta)[..., None, None]
    L = eta_ * ratio * strict * np.einsum("...ik,...jk->...ij", u, u_hat)
    rhs = eta_[..., 0] * (a - gamma * np.einsum("...ik,...k->...i", u, delta0))
    w = solve_triangular(L + np.eye(n), rhs[..., None], lower=True, unit_diagonal=True)[..., 0]
    wu = w[..., None] * u_hat
    d_bar = d_prior[..., None, :] + gamma[..., None] * delta0[..., None, :] + np.einsum(
        "...ij,...jk->...ik", ratio * strict, wu)
    delta_out = gamma[..., -1:] * delta0 + np.einsum("...j,...jk->...k", ratio[..., -1, :], wu)
    return d_bar, delta_out


def state_chunk(q, k, k_w, v, beta, g, h0, scale):
    """C3: DeltaNet's WY/UT form with read key K and write key K̃ over one chunk.

    A_ij = β_i e^{λ_i−λ_j} ⟨k_i, k̃_j⟩ (j < i), U = (I + A)^{-1} diag(β)(V − diag(e^λ) K h⁰),
    O = scale (diag(e^λ) Q h⁰ + tril(e^{λ_i−λ_j} Q K̃ᵀ) U), h_end = e^{λ_n} h⁰ + (diag(e^{λ_n−λ}) K̃)ᵀ U.

    Parameters
    ----------
    q, k, k_w : [..., n, K];  v : [..., n, V];  beta, g : [..., n];  h0 : [..., K, V];  scale : float

    Returns
    -------
    o : [..., n, V], h_end : [..., K, V]
    """
    n = k.shape[-2]
    lam = np.cumsum(g, axis=-1)
    lower = np.tril(np.ones((n, n), dtype=bool))
    decay = np.exp(np.where(lower, lam[..., :, None] - lam[..., None, :], -np.inf))  # e^{λ_i−λ_j}, j ≤ i
    strict = np.tril(np.ones((n, n)), -1)
    A = beta[..., :, None] * decay * strict * np.einsum("...ik,...jk->...ij", k, k_w)
    el = np.exp(lam)[..., None]
    rhs = beta[..., None] * (v - el * np.einsum("...ik,...kv->...iv", k, h0))
    U = solve_triangular(A + np.eye(n), rhs, lower=True, unit_diagonal=True)
    o = scale * (el * np.einsum("...ik,...kv->...iv", q, h0)
                 + np.einsum("...ij,...jv->...iv", decay * np.einsum("...ik,...jk->...ij", q, k_w), U))
    tail = np.exp(lam[..., -1:] - lam)[..., None]
    h_end = np.exp(lam[..., -1])[..., None, None] * h0 + np.einsum("...jk,...jv->...kv", tail * k_w, U)
    return o, h_end


def chunkwise_osdn(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None,
    use_qk_l2norm_in_kernel=False, cu_seqlens=None, chunk_size=64,
):
    """OSDN by its chunkwise form C1–C3 in float64; same arguments and results as
    :func:`osdn_ref.recurrent_osdn` (spec §4, §6; equal to E1–E8 for every chunk size, T1).

    Parameters
    ----------
    q, k : [B, T, H, K];  v : [B, T, H, V];  beta, g, alpha : [B, T, H];  eta : float or [H];
    d_prior : [H, K];  initial_state : [N, H, K, V];  initial_precond : [N, H, K]
        As in :func:`osdn_ref.recurrent_osdn`.
    chunk_size : int
        C ≥ 1; the last chunk of each sequence may be shorter. Packed sequences (cu_seqlens) start
        a fresh chunk at each sequence start, as the kernel does.

    Returns
    -------
    o : float64 [B, T, H, V];  final_state : [N, H, K, V] or None;  final_precond : [N, H, K] or None
    """
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    p = prepare(q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond,
                d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens)
    B, T, H, K, V, N = (getattr(p.dims, a) for a in "BTHKVN")
    o = np.empty((B, T, H, V))
    h_out = np.empty((N, H, K, V))
    d_out = np.empty((N, H, K))
    # [B, T, H, X] -> [B, H, T, X]: heads become batch dimensions of the chunk math
    tq, tk, tv = (x.transpose(0, 2, 1, 3) for x in (p.q, p.k, p.v))
    tb, tg, ta = (x.transpose(0, 2, 1) for x in (p.beta, p.g, p.alpha))
    if p.cu_seqlens is None:
        groups = [(slice(0, B), slice(0, B), 0, T)]
    else:
        groups = [(slice(n, n + 1), slice(0, 1), t0, t1) for n, _, t0, t1 in segments(p)]
    for nsl, bsl, t0, t1 in groups:
        h = p.h0[nsl].copy()
        delta = p.d0[nsl] - p.d_prior[None]
        for c0 in range(t0, t1, chunk_size):
            c = slice(c0, min(c0 + chunk_size, t1))
            d_bar, delta = dscan_chunk(tk[bsl, :, c], tb[bsl, :, c], ta[bsl, :, c], p.eta[None, :],
                                       p.d_prior[None], delta)  # C1
            k_w = np.clip(d_bar, p.d_min, p.d_max) * tk[bsl, :, c]  # C2
            oc, h = state_chunk(tq[bsl, :, c], tk[bsl, :, c], k_w, tv[bsl, :, c], tb[bsl, :, c],
                                tg[bsl, :, c], h, p.scale)  # C3
            o[bsl, c] = oc.transpose(0, 2, 1, 3)
        h_out[nsl] = h
        d_out[nsl] = delta + p.d_prior[None]
    if not output_final_state:
        return o, None, None
    return o, h_out, d_out
