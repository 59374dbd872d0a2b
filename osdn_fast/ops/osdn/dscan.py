"""The preconditioner scan (spec E1, E2, E7, E8; D4, C1, C2) and its reverse-mode derivative.

The learner never reads the state (D3), so it runs as its own kernel: one program per (sequence, head),
a K-vector carried token by token. It emits the write keys K̃ = clip(d̄_{t-1}) ⊙ k_t of C2 for the state
kernels and, for the backward pass, the learner's iterate d_{t-1} before APF.

This is the token-serial form of the one-column gated delta rule of D4 (the same affine recurrence
that C1 solves chunk by chunk); its work is O(T K) per head and it never divides products of gates,
so α = 0 is an exact hard reset.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dscan_fwd_kernel(
    k, beta, alpha, eta, d_prior, d0, w, dprev, dT, cu, d_min, d_max,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_D0: tl.constexpr, STORE_DPREV: tl.constexpr, STORE_DT: tl.constexpr,
):
    """Forward scan. k [T, H, K]; beta, alpha [T, H]; eta [H]; d_prior [H, K]; d0 [N, H, K].

    Writes w = K̃ [T, H, K] (fp32, E3 write keys), dprev = d_{t-1} [T, H, K] (fp32), dT = d_T [N, H, K].
    """
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    dp = tl.load(d_prior + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    if HAS_D0:
        d = tl.load(d0 + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        d = dp
    et = tl.load(eta + i_h).to(tl.float32)
    for t in tl.range(bos, eos, num_stages=3):
        kt = tl.load(k + (t * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        bt = tl.load(beta + t * H + i_h).to(tl.float32)
        if STORE_DPREV:
            tl.store(dprev + (t * H + i_h) * K + o_k, d, mask=m_k)
        if HAS_ALPHA:
            at = tl.load(alpha + t * H + i_h).to(tl.float32)
            dbar = dp + at * (d - dp)  # E1
        else:
            dbar = d
        p = tl.minimum(tl.maximum(dbar, d_min, propagate_nan=tl.PropagateNan.ALL), d_max,
                       propagate_nan=tl.PropagateNan.ALL)  # E2
        tl.store(w + (t * H + i_h) * K + o_k, p * kt, mask=m_k)  # E3 / C2
        k2 = kt * kt
        s = tl.sum(k2, axis=0)
        u = bt * k2
        rho = 1.0 - tl.sum(u * dbar, axis=0)  # E7 at the learner's point
        nz = s > 0
        step = tl.where(nz, et * rho / tl.where(nz, s, 1.0), 0.0)
        d = dbar + step * u  # E8
    if STORE_DT:
        tl.store(dT + (i_n * H + i_h) * K + o_k, d, mask=m_k)


@triton.jit
def dscan_bwd_kernel(
    k, beta, alpha, eta, d_prior, dprev, dw, ddT, cu, d_min, d_max,
    dk, dbeta, dalpha, deta, ddp, dd0,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_DDT: tl.constexpr,
):
    """Reverse-mode scan: from dL/dK̃ (dw [T, H, K], fp32) and dL/dd_T (ddT [N, H, K]) to the inputs.

    Adds to dk [T, H, K] and dbeta [T, H] (the parts through K̃ and the learner), writes dalpha [T, H], per-(sequence, head)
    partial sums deta [N, H] and ddp [N, H, K] (d° through E1), and dd0 [N, H, K] (dL/dd_0).
    The clip of E2 passes the gradient strictly inside the bounds, d_min < d̄ < d_max (as the float64 VJP).
    """
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    dp = tl.load(d_prior + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    et = tl.load(eta + i_h).to(tl.float32)
    if HAS_DDT:
        gd = tl.load(ddT + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        gd = tl.zeros([BK], dtype=tl.float32)
    g_dp = tl.zeros([BK], dtype=tl.float32)
    g_eta = tl.zeros([BK], dtype=tl.float32)  # accumulated as a vector, summed at the end
    for tt in tl.range(bos, eos, num_stages=3):
        t = eos - 1 - (tt - bos)
        kt = tl.load(k + (t * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        bt = tl.load(beta + t * H + i_h).to(tl.float32)
        dpv = tl.load(dprev + (t * H + i_h) * K + o_k, mask=m_k, other=0.0)
        if HAS_ALPHA:
            at = tl.load(alpha + t * H + i_h).to(tl.float32)
            dbar = dp + at * (dpv - dp)
        else:
            at = 1.0
            dbar = dpv
        p = tl.minimum(tl.maximum(dbar, d_min, propagate_nan=tl.PropagateNan.ALL), d_max,
                       propagate_nan=tl.PropagateNan.ALL)
        inr = (dbar > d_min) & (dbar < d_max)  # strictly inside, as the oracle's VJP
        gw = tl.load(dw + (t * H + i_h) * K + o_k, mask=m_k, other=0.0)
        g_k = gw * p  # through K̃ = p ⊙ k
        g_p = gw * kt
        k2 = kt * kt
        s = tl.sum(k2, axis=0)
        nz = s > 0
        s_safe = tl.where(nz, s, 1.0)
        u = bt * k2
        uh = tl.where(nz, u / s_safe, 0.0)
        rho = 1.0 - tl.sum(u * dbar, axis=0)
        # d_t = d̄ + η ρ(d̄) û   (E8)
        gu_h = tl.sum(gd * uh, axis=0)
        g_dbar = gd - et * gu_h * u + tl.where(inr, g_p, 0.0)
        g_eta += tl.where(o_k == 0, rho * gu_h, 0.0)
        g_u = -(et * gu_h) * dbar
        g_uh = tl.where(nz, et * rho * gd, 0.0)
        # u = β k², û = β k² / ‖k‖²
        c = tl.sum(g_uh * k2, axis=0) / s_safe
        g_k += g_u * bt * 2.0 * kt + tl.where(nz, (2.0 * bt / s_safe) * kt * (g_uh - c), 0.0)
        g_b = tl.sum(g_u * k2, axis=0) + c
        # add to the state part's dL/dk, dL/dβ (each token row belongs to this program alone)
        p_dk = dk + (t * H + i_h) * K + o_k
        tl.store(p_dk, tl.load(p_dk, mask=m_k, other=0.0) + g_k, mask=m_k)
        tl.store(dbeta + t * H + i_h, tl.load(dbeta + t * H + i_h) + g_b)
        # d̄ = d° + α (d − d°)   (E1)
        if HAS_ALPHA:
            tl.store(dalpha + t * H + i_h, tl.sum(g_dbar * (dpv - dp), axis=0))
            g_dp += (1.0 - at) * g_dbar
            gd = at * g_dbar
        else:
            gd = g_dbar
    tl.store(deta + i_n * H + i_h, tl.sum(g_eta, axis=0))
    tl.store(ddp + (i_n * H + i_h) * K + o_k, g_dp, mask=m_k)
    tl.store(dd0 + (i_n * H + i_h) * K + o_k, gd, mask=m_k)
