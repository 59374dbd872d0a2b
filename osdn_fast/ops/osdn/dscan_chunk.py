"""The preconditioner scan in chunk form (spec C1, C2; D4, E1, E2, E7, E8) and its reverse-mode derivative.

Drop-in replacements for ``dscan.dscan_fwd_kernel`` / ``dscan.dscan_bwd_kernel``: same inputs and
outputs, but the sequential dependence runs over chunks of C tokens instead of over tokens.

Math (per sequence and head; u_t = β_t k_t², û_t = u_t / ‖k_t‖² (0 where k_t = 0), a_t = ρ_t(d°) = 1 − ⟨u_t, d°⟩,
δ = d − d°). By D4, E1 + E8 read::

    δ̄_{t-1} = α_t δ_{t-1},   w_t = η ρ_t(d̄_{t-1}) = η (a_t − ⟨u_t, δ̄_{t-1}⟩),   δ_t = δ̄_{t-1} + w_t û_t,

a gated delta rule with one value column. In a chunk of n ≤ C tokens (local i = 1..n, δ⁰ entering) with gate
ratios R(i, j) = Π_{j<l≤i} α_l and Γ_i = R(i, 0)::

    (C1)  (I + L) w = η (a − Γ ⊙ (U δ⁰)),   L_ij = η R(i, j) ⟨u_i, û_j⟩  (j < i)
          δ_{i-1} = Γ_{i-1} δ⁰ + Σ_{j<i} R(i-1, j) w_j û_j          (stored as dprev = d° + δ_{i-1})
          d̄_{i-1} = d° + α_i δ_{i-1},   δ leaving = α_n δ_{n-1} + w_n û_n
    (C2)  K̃_i = clip(d̄_{i-1}, d_min, d_max) ⊙ k_i

M_d = (I + L)^{-1} depends on k, β, α, η only (not on δ⁰), so it is built for all chunks in parallel
(``dscan_chunk_prep_kernel``); the serial programs then do per chunk a matrix-vector product with M_d and
one [C, C]·[C, K] product.

Backward. With z_t = ∂L/∂d_t (z_T = ∂L/∂d_T or 0), direct_t = [d_min < d̄_{t-1} < d_max] ⊙ ∂L/∂K̃_t ⊙ k_t and
s_t = ⟨û_t, z_t⟩, the token-serial adjoint is G_t := ∂L/∂d̄_{t-1} = direct_t + z_t − η s_t u_t and
z_{t-1} = α_t G_t. With E_l = direct_l − η s_l u_l, inside a chunk from z_n::

    G_i = Σ_{l≥i} R(l, i) E_l + R(n, i) z_n,    z_i = G_i − E_i,    z entering = α_1 G_1,
    (I + Lᵀ) s = b,   b_i = R(n, i) ⟨û_i, z_n⟩ + Σ_{l>i} R(l, i) ⟨û_i, direct_l⟩,

i.e. s = M_dᵀ b (the transposed solve). Per token: ∂L/∂u_t = −η s_t d̄_{t-1}, ∂L/∂û_t = η ρ_t z_t,
∂L/∂η += ρ_t s_t, ∂L/∂α_t = ⟨G_t, δ_{t-1}⟩ (direct, never through log α), ∂L/∂d° += (1 − α_t) G_t (E1), and
u, û → k, β as in the token-serial kernel.

Gate ratios (spec §6, α = 0 is an exact hard reset): never quotients of products, never log 0. Within a chunk,
λ = cumsum(log|α| where α ≠ 0 else 0), r = cumsum(α == 0), ν = cumsum(α < 0), and
R(i, j) = (−1)^{ν_i − ν_j} exp(λ_i − λ_j) if r_i = r_j else 0 (j ≤ i); the exponent is ≤ 0 for α ∈ [0, 1].
A NaN gate gives NaN ratios (it propagates, spec §6). Without α all ratios are 1.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .wy import _chunk_rows, _unit_lower_inverse


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------

@triton.jit
def _seq_head(cu):
    """Program ids of the serial kernels (grid (N, H)) and the bounds [bos, eos) of sequence i_n."""
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    return i_n, i_h, bos, eos


@triton.jit
def _head_params(d_prior, eta, i_h, K: tl.constexpr, BK: tl.constexpr):
    """Key offsets and mask, the prior d° [BK] (E1, zero-padded) and the hyper step η (E8) of head i_h."""
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    dp = tl.load(d_prior + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    et = tl.load(eta + i_h).to(tl.float32)
    return o_k, m_k, dp, et


@triton.jit
def _load_rows(ptr, t0, t1, i_h, H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """Rows t0..t1-1 of a [T, H, D] tensor as float32 [BT, BD], zero-padded."""
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, BD)
    m = ((t0 + o_t) < t1)[:, None] & (o_d < D)[None, :]
    return tl.load(ptr + ((t0 + o_t[:, None]) * H + i_h) * D + o_d[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, t0, t1, i_h, H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, BD)
    m = ((t0 + o_t) < t1)[:, None] & (o_d < D)[None, :]
    tl.store(ptr + ((t0 + o_t[:, None]) * H + i_h) * D + o_d[None, :], x, mask=m)


@triton.jit
def _chunk_keys(k, beta, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """Keys of one chunk and the learner's read/write keys of D4.

    Returns k [BT, BK], β [BT], k² [BT, BK], u = β k², û = u / ‖k‖² (0 where k = 0), ‖k‖² made safe (1 where 0),
    the nonzero-key flags [BT] and the row mask [BT]; padded rows are zero.
    """
    o_t = tl.arange(0, BT)
    m_t = (t0 + o_t) < t1
    kk = _load_rows(k, t0, t1, i_h, H, K, BT, BK)
    b = tl.load(beta + (t0 + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    k2 = kk * kk
    s = tl.sum(k2, axis=1)
    nz = s > 0
    s_safe = tl.where(nz, s, 1.0)
    u = b[:, None] * k2
    uh = tl.where(nz[:, None], u / s_safe[:, None], 0.0)
    return kk, b, k2, u, uh, s_safe, nz, m_t


@triton.jit
def _gate_ratios(alpha, t0, t1, i_h, H: tl.constexpr, BT: tl.constexpr, HAS_ALPHA: tl.constexpr):
    """APF gates of one chunk (E1) and their ratios, exact for α = 0 (spec §6).

    Returns
    -------
    a : [BT]           α_i (1 without α and on padded rows)
    R : [BT, BT]       R(i, j) = Π_{j<l≤i} α_l for j ≤ i (1 on the diagonal), 0 above it
    gam : [BT]         Γ_i = R(i, 0) = Π_{l≤i} α_l
    Rx : [BT, BT]      R(i-1, j) for j < i, 0 elsewhere (ratios to the token before i)
    gamx : [BT]        Γ_{i-1}
    """
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    strict = o_t[:, None] > o_t[None, :]
    if HAS_ALPHA:
        a = tl.load(alpha + (t0 + o_t) * H + i_h, mask=(t0 + o_t) < t1, other=1.0).to(tl.float32)
        zr = (a == 0.0).to(tl.int32)
        ng = (a < 0.0).to(tl.int32)
        la = tl.log(tl.where(a == 0.0, 1.0, tl.abs(a)))  # 0 at a reset; NaN stays NaN
        lam = tl.cumsum(la, axis=0)
        rc = tl.cumsum(zr, axis=0)
        nu = tl.cumsum(ng, axis=0)
        lamx = lam - la
        rcx = rc - zr
        nux = nu - ng
        # inclusive ratios
        ok = incl & (rc[:, None] == rc[None, :])
        sg = 1.0 - 2.0 * ((nu[:, None] - nu[None, :]) & 1).to(tl.float32)
        R = tl.where(ok, sg * tl.exp(tl.where(ok, lam[:, None] - lam[None, :], 0.0)), 0.0)
        gam = tl.where(rc == 0, (1.0 - 2.0 * (nu & 1).to(tl.float32)) * tl.exp(tl.where(rc == 0, lam, 0.0)), 0.0)
        # ratios to the previous token
        okx = strict & (rcx[:, None] == rc[None, :])
        sgx = 1.0 - 2.0 * ((nux[:, None] - nu[None, :]) & 1).to(tl.float32)
        Rx = tl.where(okx, sgx * tl.exp(tl.where(okx, lamx[:, None] - lam[None, :], 0.0)), 0.0)
        gamx = tl.where(rcx == 0, (1.0 - 2.0 * (nux & 1).to(tl.float32)) * tl.exp(tl.where(rcx == 0, lamx, 0.0)),
                        0.0)
    else:
        a = tl.full([BT], 1.0, dtype=tl.float32)
        R = tl.where(incl, 1.0, 0.0)
        gam = tl.full([BT], 1.0, dtype=tl.float32)
        Rx = tl.where(strict, 1.0, 0.0)
        gamx = tl.full([BT], 1.0, dtype=tl.float32)
    return a, R, gam, Rx, gamx


@triton.jit
def _clip(x, d_min, d_max):
    """E2, NaN-propagating."""
    return tl.minimum(tl.maximum(x, d_min, propagate_nan=tl.PropagateNan.ALL), d_max,
                      propagate_nan=tl.PropagateNan.ALL)


# ---------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------

@triton.jit
def dscan_chunk_prep_kernel(
    k, beta, alpha, eta, cu, chunk_idx, Md,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BKC: tl.constexpr,
    HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
):
    """M_d = (I + L)^{-1} of C1 for every chunk at once; grid (number of chunks, H).

    L_ij = η R(i, j) ⟨u_i, û_j⟩ for j < i (u = β k², û = u / ‖k‖², D4). Md [T, H, BT] (fp32): row t holds row
    (t − chunk start) of its chunk's M_d, the layout of :mod:`wy`'s M. Keys are read in column blocks of BKC;
    ⟨u_i, û_j⟩ = ⟨u_i, u_j⟩ / ‖k_j‖².
    """
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    et = tl.load(eta + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)
    m_t = (t0 + o_t) < t1
    b = tl.load(beta + (t0 + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    uu = tl.zeros([BT, BT], dtype=tl.float32)
    s = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BKC)):
        o_k = i_k * BKC + tl.arange(0, BKC)
        kk = tl.load(k + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :],
                     mask=m_t[:, None] & (o_k[None, :] < K), other=0.0).to(tl.float32)
        k2 = kk * kk
        s += tl.sum(k2, axis=1)
        u = b[:, None] * k2
        uu += tl.dot(u, tl.trans(u), input_precision=PREC)
    nz = s > 0
    uuh = tl.where(nz[None, :], uu / tl.where(nz, s, 1.0)[None, :], 0.0)  # ⟨u_i, û_j⟩
    _, R, _, _, _ = _gate_ratios(alpha, t0, t1, i_h, H, BT, HAS_ALPHA)
    L = tl.where(o_t[:, None] > o_t[None, :], et * R * uuh, 0.0)
    Mi = _unit_lower_inverse(L, BT)
    tl.store(Md + ((t0 + o_t[:, None]) * H + i_h) * BT + o_t[None, :], Mi, mask=m_t[:, None])


@triton.jit
def dscan_chunk_fwd_kernel(
    k, beta, alpha, eta, d_prior, d0, Md, w, dprev, dT, cu, d_min, d_max,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_D0: tl.constexpr, STORE_DPREV: tl.constexpr, STORE_DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """Forward scan in chunk form (C1, C2); grid (N, H), one program per (sequence, head), serial over chunks.

    Inputs as ``dscan.dscan_fwd_kernel`` plus Md [T, H, BT] from ``dscan_chunk_prep_kernel``.
    Writes w = K̃ [T, H, K] (fp32, E3/C2 write keys), dprev = d_{t-1} [T, H, K] (fp32, the learner's iterate
    before APF, E1) and dT = d_T [N, H, K].
    """
    i_n, i_h, bos, eos = _seq_head(cu)
    o_k, m_k, dp, et = _head_params(d_prior, eta, i_h, K, BK)
    if HAS_D0:
        delta = tl.load(d0 + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32) - dp
    else:
        delta = tl.zeros([BK], dtype=tl.float32)
    o_t = tl.arange(0, BT)
    for c in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        kk, b, k2, u, uh, s_safe, nz, m_t = _chunk_keys(k, beta, t0, t1, i_h, H, K, BT, BK)
        a, R, gam, Rx, gamx = _gate_ratios(alpha, t0, t1, i_h, H, BT, HAS_ALPHA)
        Mi = _load_rows(Md, t0, t1, i_h, H, BT, BT, BT)
        # C1: w = η M_d (a − Γ ⊙ U δ⁰), a = ρ(d°)
        rhs = et * (1.0 - tl.sum(u * dp[None, :], axis=1) - gam * tl.sum(u * delta[None, :], axis=1))
        wv = tl.sum(Mi * rhs[None, :], axis=1)
        wu = wv[:, None] * uh
        dev = tl.dot(Rx, wu, input_precision=PREC) + gamx[:, None] * delta[None, :]  # δ_{i-1}
        if STORE_DPREV:
            _store_rows(dprev, dp[None, :] + dev, t0, t1, i_h, H, K, BT, BK)
        if HAS_ALPHA:
            dbar = dp[None, :] + a[:, None] * dev  # E1
        else:
            dbar = dp[None, :] + dev
        _store_rows(w, _clip(dbar, d_min, d_max) * kk, t0, t1, i_h, H, K, BT, BK)  # E2, E3 / C2
        # δ leaving the chunk = α_n δ_{n-1} + w_n û_n  (E1 + E8 at its last token)
        delta = tl.sum(tl.where(o_t[:, None] == (t1 - t0 - 1), a[:, None] * dev + wu, 0.0), axis=0)
    if STORE_DT:
        tl.store(dT + (i_n * H + i_h) * K + o_k, dp + delta, mask=m_k)


@triton.jit
def dscan_chunk_bwd_kernel(
    k, beta, alpha, eta, d_prior, dprev, Md, dw, ddT, cu, d_min, d_max,
    dk, dbeta, dalpha, deta, ddp, dd0,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_DDT: tl.constexpr, PREC: tl.constexpr,
):
    """Reverse-mode scan in chunk form (transposed C1); grid (N, H), chunks in reverse.

    Inputs and outputs as ``dscan.dscan_bwd_kernel`` plus Md [T, H, BT]: adds to dk [T, H, K] and
    dbeta [T, H], writes dalpha [T, H], per-(sequence, head) deta [N, H] and ddp [N, H, K] (d° through E1), and
    dd0 [N, H, K] (dL/dd_0). The clip of E2 passes the gradient strictly inside d_min < d̄ < d_max.
    """
    i_n, i_h, bos, eos = _seq_head(cu)
    o_k, m_k, dp, et = _head_params(d_prior, eta, i_h, K, BK)
    if HAS_DDT:
        z = tl.load(ddT + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        z = tl.zeros([BK], dtype=tl.float32)
    g_dp = tl.zeros([BK], dtype=tl.float32)
    g_eta = tl.zeros([BT], dtype=tl.float32)  # summed at the end
    o_t = tl.arange(0, BT)
    strict = o_t[:, None] > o_t[None, :]
    nc = tl.cdiv(eos - bos, BT)
    for cc in range(0, nc):
        t0 = bos + (nc - 1 - cc) * BT
        t1 = tl.minimum(t0 + BT, eos)
        kk, b, k2, u, uh, s_safe, nz, m_t = _chunk_keys(k, beta, t0, t1, i_h, H, K, BT, BK)
        a, R, gam, Rx, gamx = _gate_ratios(alpha, t0, t1, i_h, H, BT, HAS_ALPHA)
        Mi = _load_rows(Md, t0, t1, i_h, H, BT, BT, BT)
        dev = _load_rows(dprev, t0, t1, i_h, H, K, BT, BK) - dp[None, :]  # δ_{i-1}
        dev = tl.where(m_t[:, None], dev, 0.0)
        if HAS_ALPHA:
            dbar = dp[None, :] + a[:, None] * dev
        else:
            dbar = dp[None, :] + dev
        p = _clip(dbar, d_min, d_max)
        inr = (dbar > d_min) & (dbar < d_max)
        gw = _load_rows(dw, t0, t1, i_h, H, K, BT, BK)
        g_k = gw * p  # through K̃ = p ⊙ k
        direct = tl.where(inr, gw * kk, 0.0)  # through p = clip(d̄)
        rho = 1.0 - tl.sum(u * dbar, axis=1)  # E7 at the learner's point
        last = o_t[:, None] == (t1 - t0 - 1)
        rn = tl.sum(tl.where(last, R, 0.0), axis=0)  # R(n, i)
        # transposed C1: (I + Lᵀ) s = b, s = M_dᵀ b
        pd = tl.dot(direct, tl.trans(uh), input_precision=PREC)  # ⟨direct_l, û_i⟩ at [l, i]
        bv = rn * tl.sum(uh * z[None, :], axis=1) + tl.sum(tl.where(strict, R * pd, 0.0), axis=0)
        s = tl.sum(Mi * bv[:, None], axis=0)
        e = direct - (et * s)[:, None] * u
        G = tl.dot(tl.trans(R), e, input_precision=PREC) + rn[:, None] * z[None, :]  # ∂L/∂d̄_{i-1}
        zi = G - e  # ∂L/∂d_i
        # E8: d_i = d̄ + η ρ(d̄) û,  u = β k², û = β k² / ‖k‖²
        g_u = -(et * s)[:, None] * dbar
        g_uh = tl.where(nz[:, None], (et * rho)[:, None] * zi, 0.0)
        cst = tl.sum(g_uh * k2, axis=1) / s_safe
        g_k += g_u * (2.0 * b)[:, None] * kk + tl.where(nz[:, None], (2.0 * b / s_safe)[:, None] * kk
                                                         * (g_uh - cst[:, None]), 0.0)
        g_b = tl.sum(g_u * k2, axis=1) + cst
        _store_rows(dk, _load_rows(dk, t0, t1, i_h, H, K, BT, BK) + g_k, t0, t1, i_h, H, K, BT, BK)
        p_b = dbeta + (t0 + o_t) * H + i_h
        tl.store(p_b, tl.load(p_b, mask=m_t, other=0.0) + g_b, mask=m_t)
        g_eta += tl.where(m_t, rho * s, 0.0)
        # E1: d̄ = d° + α (d − d°)
        if HAS_ALPHA:
            tl.store(dalpha + (t0 + o_t) * H + i_h, tl.sum(G * dev, axis=1), mask=m_t)
            g_dp += tl.sum(tl.where(m_t[:, None], (1.0 - a)[:, None] * G, 0.0), axis=0)
        z = tl.sum(tl.where(o_t[:, None] == 0, a[:, None] * G, 0.0), axis=0)  # z entering = α_1 G_1
    tl.store(deta + i_n * H + i_h, tl.sum(g_eta, axis=0))
    tl.store(ddp + (i_n * H + i_h) * K + o_k, g_dp, mask=m_k)
    tl.store(dd0 + (i_n * H + i_h) * K + o_k, z, mask=m_k)
