"""The preconditioner scan in chunk form (spec C1, C2; D4, E1, E2, E7, E8) and its reverse-mode derivative.

Drop-in replacements (the drivers ``dscan_chunk_forward`` / ``dscan_chunk_backward``) for
``dscan.dscan_fwd_kernel`` / ``dscan.dscan_bwd_kernel``: same results, but the sequential dependence runs over
chunks of C tokens instead of over tokens, and carries only a K-vector from chunk to chunk.

Math (per sequence and head; u_t = β_t k_t², û_t = u_t / ‖k_t‖² (0 where k_t = 0), a_t = ρ_t(d°) = 1 − ⟨u_t, d°⟩,
δ = d − d°). By D4, E1 + E8 read::

    δ̄_{t-1} = α_t δ_{t-1},   w_t = η ρ_t(d̄_{t-1}) = η (a_t − ⟨u_t, δ̄_{t-1}⟩),   δ_t = δ̄_{t-1} + w_t û_t,

a gated delta rule with one value column. In a chunk of n ≤ C tokens (local i = 1..n, δ⁰ entering) with gate
ratios R(i, j) = Π_{j<l≤i} α_l and Γ_i = R(i, 0)::

    (C1)  (I + L) w = η (a − Γ ⊙ (U δ⁰)),   L_ij = η R(i, j) ⟨u_i, û_j⟩  (j < i)
          δ_{i-1} = Γ_{i-1} δ⁰ + Σ_{j<i} R(i-1, j) w_j û_j          (dprev = d° + δ_{i-1})
          d̄_{i-1} = d° + α_i δ_{i-1},   δ leaving = α_n δ_{n-1} + w_n û_n
    (C2)  K̃_i = clip(d̄_{i-1}, d_min, d_max) ⊙ k_i

M_d = (I + L)^{-1} depends on k, β, α, η only (not on δ⁰), so it is built for all chunks in parallel
(``dscan_chunk_prep_kernel``). The only serial work is the carry δ⁰ → δ leaving = Γ_n δ⁰ + Σ_j R(n, j) w_j û_j,
two K-reductions and a [C, C] matrix-vector product per chunk (``dscan_chunk_fwd_kernel``, which stores each
chunk's δ⁰); the per-token iterates and write keys then follow for all chunks at once from their δ⁰
(``dscan_chunk_out_kernel``; where the two-level carry runs, its second pass writes them as it walks, ``_fuse_out``;
recomputed, not stored, in the backward: ``_chunk_dev``).

Backward. With z_t = ∂L/∂d_t (z_T = ∂L/∂d_T or 0), direct_t = [d_min < d̄_{t-1} < d_max] ⊙ ∂L/∂K̃_t ⊙ k_t and
s_t = ⟨û_t, z_t⟩, the token-serial adjoint is G_t := ∂L/∂d̄_{t-1} = direct_t + z_t − η s_t u_t and
z_{t-1} = α_t G_t. With E_l = direct_l − η s_l u_l, inside a chunk from z_n::

    G_i = Σ_{l≥i} R(l, i) E_l + R(n, i) z_n,    z_i = G_i − E_i,    z entering = α_1 G_1,
    (I + Lᵀ) s = b,   b_i = R(n, i) ⟨û_i, z_n⟩ + Σ_{l>i} R(l, i) ⟨û_i, direct_l⟩,

i.e. s = M_dᵀ b (the transposed solve). All of this is linear in z_n: with b = b⁰ + R(n, ·) ⊙ Û z_n
(b⁰ the direct part), s = s⁰ + s¹, s¹ = M_dᵀ (R(n, ·) ⊙ Û z_n), and since α_1 R(l, 1) = Γ_l the adjoint leaving the
chunk is::

    α_1 G_1 = g⁰ + Γ_n z_n − η Σ_l Γ_l s¹_l u_l,    g⁰ = Σ_l Γ_l (direct_l − η s⁰_l u_l).

So the backward is three passes: g⁰ and s⁰ for all chunks at once (``dscan_chunk_bwd_pre_kernel``), the serial carry of z
over the chunks in reverse (``dscan_chunk_bwd_walk_kernel``: one [C, K] matrix-vector product each way and one
[C, C] product per chunk), then every gradient for all chunks at once from their δ⁰ and z_n
(``dscan_chunk_bwd_kernel``). Per token: ∂L/∂u_t = −η s_t d̄_{t-1}, ∂L/∂û_t = η ρ_t z_t,
∂L/∂η += ρ_t s_t, ∂L/∂α_t = ⟨G_t, δ_{t-1}⟩ (direct, never through log α), ∂L/∂d° += (1 − α_t) G_t (E1), and
u, û → k, β as in the token-serial kernel.

Gate ratios (spec §6, α = 0 is an exact hard reset): never quotients of products, never log 0. Within a chunk,
λ = cumsum(log|α| where α ≠ 0 else 0), r = cumsum(α == 0), ν = cumsum(α < 0), and
R(i, j) = (−1)^{ν_i − ν_j} exp(λ_i − λ_j) if r_i = r_j else 0 (j ≤ i); the exponent is ≤ 0 for α ∈ [0, 1].
A NaN gate gives NaN ratios (it propagates, spec §6). Without α all ratios are 1.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .utils import cdiv, chunk_index_tensors, env_int as _env, maxnreg as _maxnreg, next_pow2, scan_segment_tensors
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
    # scalar 64-bit row offset, 32-bit tile offsets (t0 is int64)
    return tl.load((ptr + (t0 * H + i_h) * D) + (o_t[:, None] * (H * D) + o_d[None, :]), mask=m,
                   other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, t0, t1, i_h, H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, BD)
    m = ((t0 + o_t) < t1)[:, None] & (o_d < D)[None, :]
    tl.store((ptr + (t0 * H + i_h) * D) + (o_t[:, None] * (H * D) + o_d[None, :]), x, mask=m)


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
    kk, b, k2, u, uh, s_safe, nz = _keys_of(kk, b)
    return kk, b, k2, u, uh, s_safe, nz, m_t


@triton.jit
def _keys_of(kr, br):
    """``_chunk_keys`` from loaded (zero-padded) keys kr [BT, BK] and β br [BT], in any float dtype."""
    kk = kr.to(tl.float32)
    b = br.to(tl.float32)
    k2 = kk * kk
    s = tl.sum(k2, axis=1)
    nz = s > 0
    s_safe = tl.where(nz, s, 1.0)
    u = b[:, None] * k2
    uh = tl.where(nz[:, None], u / s_safe[:, None], 0.0)
    return kk, b, k2, u, uh, s_safe, nz


@triton.jit
def _carry_loads(k, beta, alpha, Md, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
                 BK: tl.constexpr, HAS_ALPHA: tl.constexpr, LOAD_MD: tl.constexpr = True):
    """What the serial carries read of rows [t0, t1) (nothing where t1 <= t0): keys [BT, BK] and β, α [BT] in
    their stored dtypes (α 1 on padded rows, fp32 ones without α), M_d rows [BT, BT]. The carries issue these
    loads one chunk ahead, so the walk does not wait on memory between its chunks."""
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_t = (t0 + o_t) < t1
    kr = tl.load(k + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_t[:, None] & (o_k < K)[None, :],
                 other=0.0)
    br = tl.load(beta + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    if HAS_ALPHA:
        ar = tl.load(alpha + (t0 + o_t) * H + i_h, mask=m_t, other=1.0)
    else:
        ar = tl.full([BT], 1.0, dtype=tl.float32)
    if LOAD_MD:
        mr = tl.load(Md + ((t0 + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
    else:  # (not needed by the caller)
        mr = tl.zeros([BT, BT], dtype=tl.float32)
    return kr, br, ar, mr


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
def _gate_last(a, t0, t1, BT: tl.constexpr, HAS_ALPHA: tl.constexpr):
    """The gate vectors the serial carries need, from the loaded gates a [BT] (float32, 1 on padded rows), without
    the [BT, BT] ratios of ``_gate_ratios``.

    Returns Γ_i [BT], R(n, i) [BT] (n the chunk's last row; 0 past it) and Γ_n, computed exactly as
    ``_gate_ratios`` computes them (log space, reset counts, sign parity; spec §6).
    """
    o_t = tl.arange(0, BT)
    n = t1 - t0 - 1
    last = o_t == n
    if HAS_ALPHA:
        zr = (a == 0.0).to(tl.int32)
        ng = (a < 0.0).to(tl.int32)
        la = tl.log(tl.where(a == 0.0, 1.0, tl.abs(a)))
        lam = tl.cumsum(la, axis=0)
        rc = tl.cumsum(zr, axis=0)
        nu = tl.cumsum(ng, axis=0)
        gam = tl.where(rc == 0, (1.0 - 2.0 * (nu & 1).to(tl.float32)) * tl.exp(tl.where(rc == 0, lam, 0.0)), 0.0)
        lam_n = tl.sum(tl.where(last, lam, 0.0), axis=0)
        rc_n = tl.sum(tl.where(last, rc, 0), axis=0)
        nu_n = tl.sum(tl.where(last, nu, 0), axis=0)
        ok = (rc == rc_n) & (o_t <= n)
        rn = tl.where(ok, (1.0 - 2.0 * ((nu_n - nu) & 1).to(tl.float32)) * tl.exp(tl.where(ok, lam_n - lam, 0.0)), 0.0)
        gam_n = tl.sum(tl.where(last, gam, 0.0), axis=0)
    else:
        gam = tl.full([BT], 1.0, dtype=tl.float32)
        rn = tl.where(o_t <= n, 1.0, 0.0)
        gam_n = 1.0
    return gam, rn, gam_n


@triton.jit
def _carry_w(Mi, u, dp, et, gam, delta):
    """w = η M_d (a − Γ ⊙ U δ⁰) of C1 (a = ρ(d°) = 1 − U d°, E7), [BT]: the learner's steps of one chunk."""
    rhs = et * (1.0 - tl.sum(u * dp[None, :], axis=1) - gam * tl.sum(u * delta[None, :], axis=1))
    return tl.sum(Mi * rhs[None, :], axis=1)


@triton.jit
def _chunk_dev(k, beta, alpha, Md, dp, et, delta, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr,
               BK: tl.constexpr, BT: tl.constexpr, HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
               PREFIX: tl.constexpr = False):
    """One chunk of C1 from the deviation δ⁰ entering it: every iterate inside the chunk.

    w = η M_d (a − Γ ⊙ U δ⁰) (a = ρ(d°), E7), δ_{i-1} = Γ_{i-1} δ⁰ + Σ_{j<i} R(i-1, j) w_j û_j and
    d̄_{i-1} = d° + α_i δ_{i-1} (E1). Shared by the forward's output kernel and both backward kernels, which so
    recompute the forward's iterates instead of storing them.

    The sum over j < i is a product with the ratio matrix (``tl.dot`` in precision PREC), or, with PREFIX and without
    α (ratios 1), an exclusive prefix sum over the rows in float32. Same-run A/B on an H200, bf16
    (reports/gpu-run-run10-NVIDIA-H200-H100.log, call 2): write keys 0.186 → 0.144 ms and bwd_pre 0.326 → 0.269 at
    (16, 2048, 32, 64) (fwd+bwd 3.865 → 3.767), write keys 0.197 → 0.179 at (8, 4096, 16, 128); compiled offline for
    sm_90 (scan chunk 16, K = 128, 2 warps) bwd_pre needs 216 registers instead of 255. ``dscan_chunk_bwd_kernel``
    keeps the product: with prefix sums it spills (792 B of stack at 2 warps). The two forms differ by rounding only
    (TF32 products for 16-bit inputs), so the backward's iterates equal the forward's to that rounding, not bit for
    bit.
    """
    kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Rx, gamx, Mi = _chunk_operands(
        k, beta, alpha, Md, t0, t1, i_h, H, K, BK, BT, HAS_ALPHA)
    wv = _carry_w(Mi, u, dp, et, gam, delta)
    dev, dbar = _iterates(wv, uh, delta, dp, a, Rx, gamx, m_t, HAS_ALPHA, PREC, PREFIX)
    return kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar


@triton.jit
def _chunk_operands(k, beta, alpha, Md, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
                    BT: tl.constexpr, HAS_ALPHA: tl.constexpr):
    """What every chunk-parallel d-scan kernel reads of its chunk: the keys (``_chunk_keys``), the APF gate ratios
    (``_gate_ratios``) and the rows of M_d (C1)."""
    kk, b, k2, u, uh, s_safe, nz, m_t = _chunk_keys(k, beta, t0, t1, i_h, H, K, BT, BK)
    a, R, gam, Rx, gamx = _gate_ratios(alpha, t0, t1, i_h, H, BT, HAS_ALPHA)
    Mi = _load_rows(Md, t0, t1, i_h, H, BT, BT, BT)
    return kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Rx, gamx, Mi


@triton.jit
def _chunk_program(cu, chunk_idx, d_prior, eta, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
                   BT: tl.constexpr):
    """This program's chunk (grid (NT, H)): its id and head, rows [t0, t1), the head's d° and η, and the offset
    ``st`` of its [K] rows in the per-chunk buffers."""
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    _, _, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    o_k, m_k, dp, et = _head_params(d_prior, eta, i_h, K, BK)
    st = (i_c.to(tl.int64) * H + i_h) * K + o_k
    return i_c, i_h, t0, t1, m_k, dp, et, st


@triton.jit
def _iterates(wv, uh, delta, dp, a, Rx, gamx, m_t, HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
              PREFIX: tl.constexpr):
    """The iterates of one chunk from its steps w [BT] and entering δ⁰ (C1): δ_{i-1} = Γ_{i-1} δ⁰ + Σ_{j<i} R(i-1, j)
    w_j û_j and d̄_{i-1} = d° + α_i δ_{i-1} (E1), [BT, BK] each, 0 on padded rows (``_chunk_dev``)."""
    if PREFIX and not HAS_ALPHA:
        wu = wv[:, None] * uh
        dev = tl.cumsum(wu, axis=0) - wu + delta[None, :]  # δ_{i-1} (Γ = 1, R = 1)
    else:
        dev = tl.dot(Rx, wv[:, None] * uh, input_precision=PREC) + gamx[:, None] * delta[None, :]  # δ_{i-1}
    dev = tl.where(m_t[:, None], dev, 0.0)
    if HAS_ALPHA:
        dbar = dp[None, :] + a[:, None] * dev  # E1
    else:
        dbar = dp[None, :] + dev
    return dev, dbar


@triton.jit
def _chunk_from_carry(k, beta, alpha, eta, d_prior, Md, Dc, cu, chunk_idx, H: tl.constexpr, K: tl.constexpr,
                      BK: tl.constexpr, BT: tl.constexpr, HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
                      PREFIX: tl.constexpr = False):
    """Prologue of the chunk-parallel kernels (grid (NT, H)): ``_chunk_program``, and ``_chunk_dev`` from the carried
    δ⁰ (Dc)."""
    i_c, i_h, t0, t1, m_k, dp, et, st = _chunk_program(cu, chunk_idx, d_prior, eta, H, K, BK, BT)
    delta = tl.load(Dc + st, mask=m_k, other=0.0)
    kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar = _chunk_dev(
        k, beta, alpha, Md, dp, et, delta, t0, t1, i_h, H, K, BK, BT, HAS_ALPHA, PREC, PREFIX)
    return i_c, i_h, t0, t1, m_k, dp, et, st, kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar


@triton.jit
def _chunk_direct(kk, dbar, gw, d_min, d_max):
    """p = clip(d̄) (E2) and direct = [d_min < d̄ < d_max] ⊙ ∂L/∂K̃ ⊙ k (E2, E3): ∂L/∂d̄ through the write keys."""
    p = _clip(dbar, d_min, d_max)
    return p, tl.where(_clip_inside(dbar, d_min, d_max), gw * kk, 0.0)


@triton.jit
def _chunk_adjoint_parts(uh, u, R, Mi, direct, et, BT: tl.constexpr, PREC: tl.constexpr):
    """The parts of one chunk's reverse pass that do not depend on the adjoint z_n entering it from the right.

    From direct = [d_min < d̄ < d_max] ⊙ ∂L/∂K̃ ⊙ k (E2, E3; ``_chunk_direct``): b⁰_i = Σ_{l>i} R(l, i) ⟨û_i, direct_l⟩,
    s⁰ = M_dᵀ b⁰ (transposed C1) and e⁰ = direct − η s⁰ ⊙ u.
    """
    o_t = tl.arange(0, BT)
    strict = o_t[:, None] > o_t[None, :]
    pd = tl.dot(direct, tl.trans(uh), input_precision=PREC)  # ⟨direct_l, û_i⟩ at [l, i]
    b0 = tl.sum(tl.where(strict, R * pd, 0.0), axis=0)
    s0 = tl.sum(Mi * b0[:, None], axis=0)
    e0 = direct - (et * s0)[:, None] * u
    return s0, e0


@triton.jit
def _clip_inside(dbar, d_min, d_max):
    """The clip's pass-through mask [d_min < d̄ < d_max] of E2 (false at NaN), recomputed or stored as int8."""
    return (dbar > d_min) & (dbar < d_max)


@triton.jit
def dscan_chunk_fwd_kernel(
    k, beta, alpha, eta, d_prior, d0, Md, Dc, dT, cu, chunk_off, w, dprev, clipm, d_min, d_max,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_D0: tl.constexpr, STORE_DT: tl.constexpr, DEV_IO: tl.constexpr = False,
    STORE_DC: tl.constexpr = True, STORE_W: tl.constexpr = False, STORE_DPREV: tl.constexpr = False,
    STORE_MASK: tl.constexpr = False, PREC: tl.constexpr = "tf32", PREFIX: tl.constexpr = False,
):
    """Serial carry of C1 over the chunks; grid (N, H), one program per (sequence, head).

    Per chunk only what the next chunk needs: w = η M_d (a − Γ ⊙ U δ⁰) and the deviation leaving the chunk,
    Γ_n δ⁰ + Σ_j R(n, j) w_j û_j (C1). Writes Dc [NT, H, K] (fp32): the deviation δ⁰ entering every global
    chunk (``chunk_off`` [N + 1] = index of each sequence's first chunk), and dT = d_T [N, H, K].
    The per-token iterates and write keys follow chunk-parallel in ``dscan_chunk_out_kernel``.
    With DEV_IO, d0 and dT hold deviations δ = d − d° (the two-level carry runs this kernel per segment); without
    STORE_DC, Dc is not written (the two-level carry's pass for the segments' offsets). With STORE_W it also writes
    every chunk's write keys w = K̃ (C2; and with STORE_DPREV dprev, with STORE_MASK the clip's mask clipm) as
    ``dscan_chunk_out_kernel`` does, from the δ⁰ and steps w it has at hand, off the carry's chain (the two-level
    carry's second pass, which so replaces that kernel: ``_fuse_out``).
    """
    i_n, i_h, bos, eos = _seq_head(cu)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_k, m_k, dp, et = _head_params(d_prior, eta, i_h, K, BK)
    if HAS_D0:
        delta = tl.load(d0 + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        if not DEV_IO:
            delta = delta - dp
    else:
        delta = tl.zeros([BK], dtype=tl.float32)
    kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, bos, tl.minimum(bos + BT, eos), i_h, H, K, BT, BK, HAS_ALPHA)
    for c in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        if STORE_DC:
            tl.store(Dc + ((c_off + c) * H + i_h) * K + o_k, delta, mask=m_k)
        kk, b, k2, u, uh, s_safe, nz = _keys_of(kr, br)
        gam, rn, gam_n = _gate_last(ar.to(tl.float32), t0, t1, BT, HAS_ALPHA)
        Mi = mr.to(tl.float32)
        # the next chunk's loads (none past the end), issued before this chunk's dependent arithmetic
        kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t1, tl.minimum(t1 + BT, eos), i_h, H, K, BT, BK, HAS_ALPHA)
        wv = _carry_w(Mi, u, dp, et, gam, delta)
        if STORE_W:  # C1 iterates and C2 write keys of this chunk, off the carry's chain
            a, _, _, Rx, gamx = _gate_ratios(alpha, t0, t1, i_h, H, BT, HAS_ALPHA)
            m_t = (t0 + tl.arange(0, BT)) < t1
            dev, dbar = _iterates(wv, uh, delta, dp, a, Rx, gamx, m_t, HAS_ALPHA, PREC, PREFIX)
            if STORE_DPREV:
                _store_rows(dprev, dp[None, :] + dev, t0, t1, i_h, H, K, BT, BK)
            if STORE_MASK:
                _store_rows(clipm, _clip_inside(dbar, d_min, d_max).to(tl.int8), t0, t1, i_h, H, K, BT, BK)
            _store_rows(w, (_clip(dbar, d_min, d_max) * kk).to(w.dtype.element_ty), t0, t1, i_h, H, K, BT, BK)
        delta = gam_n * delta + tl.sum((rn * wv)[:, None] * uh, axis=0)
    if STORE_DT:
        if DEV_IO:
            tl.store(dT + (i_n * H + i_h) * K + o_k, delta, mask=m_k)
        else:
            tl.store(dT + (i_n * H + i_h) * K + o_k, dp + delta, mask=m_k)


@triton.jit
def dscan_chunk_out_kernel(
    k, beta, alpha, eta, d_prior, Md, Dc, w, dprev, clipm, cu, chunk_idx, d_min, d_max,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, STORE_DPREV: tl.constexpr, PREC: tl.constexpr, PREFIX: tl.constexpr = False,
    STORE_MASK: tl.constexpr = False,
):
    """Write keys of every chunk at once (C1, C2); grid (NT, H), one program per (global chunk, head).

    From the entering deviation Dc: w = K̃ = clip(d̄_{t-1}, d_min, d_max) ⊙ k_t [T, H, K] (E2, E3; computed in fp32,
    stored in w's dtype) and,
    when STORE_DPREV, dprev = d_{t-1} [T, H, K] (the learner's iterate before APF, E1; used by tests), when
    STORE_MASK, clipm = [d_min < d̄_{t-1} < d_max] [T, H, K] (int8, E2; read by ``dscan_chunk_bwd_pre_kernel``).
    """
    i_c, i_h, t0, t1, m_k, dp, et, st, kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar = _chunk_from_carry(
        k, beta, alpha, eta, d_prior, Md, Dc, cu, chunk_idx, H, K, BK, BT, HAS_ALPHA, PREC, PREFIX)
    if STORE_DPREV:
        _store_rows(dprev, dp[None, :] + dev, t0, t1, i_h, H, K, BT, BK)
    if STORE_MASK:
        _store_rows(clipm, _clip_inside(dbar, d_min, d_max).to(tl.int8), t0, t1, i_h, H, K, BT, BK)
    _store_rows(w, (_clip(dbar, d_min, d_max) * kk).to(w.dtype.element_ty), t0, t1, i_h, H, K, BT, BK)


@triton.jit
def dscan_chunk_bwd_pre_kernel(
    k, beta, alpha, eta, d_prior, Md, Dc, clipm, dw, cu, chunk_idx, d_min, d_max, G0, S0,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, PREC: tl.constexpr, PREFIX: tl.constexpr = False, MASK: tl.constexpr = 0,
):
    """The z-independent part of each chunk's adjoint carry; grid (NT, H), all chunks at once.

    With z_n the adjoint ∂L/∂d at the chunk's last token, the adjoint leaving the chunk to the left is
    α_1 G_1 = g⁰ + Γ_n z_n − η Σ_l Γ_l s¹_l u_l with s¹ = M_dᵀ (R(n, ·) ⊙ Û z_n) (module docstring; Γ_l = α_1 R(l, 1)).
    Writes G0 [NT, H, K] (fp32): g⁰ = Σ_l Γ_l e⁰_l, and S0 [T, H] (fp32): s⁰ = M_dᵀ b⁰ per token, which
    ``dscan_chunk_bwd_kernel`` reads instead of forming b⁰ again.

    The iterates d̄ enter only through the clip's mask [d_min < d̄ < d_max] (E2). MASK says where it comes from:
    - 0: recomputed from the carried δ⁰ (Dc) with the iterates (``_chunk_from_carry``, C1);
    - 1: read as the forward stored it (``clipm`` [T, H, K], int8);
    - 2: read off the write keys (``clipm`` is then w = K̃ [T, H, K], C2), for the default bounds d_min = 0,
      d_max = +∞ only: there p = max(d̄, 0), so w = p ⊙ k is 0 exactly where d̄ ≤ 0 and nonzero where d̄ > 0 and
      k ≠ 0 (where k = 0, ∂L/∂K̃ ⊙ k is 0 either way).
    With 1 and 2 it neither loads δ⁰ nor recomputes the iterates. All three give the same mask but where d̄ k
    underflows below float32's normal range (which w rounds to 0) and where d̄ is NaN or +∞: 2 counts such a
    coordinate inside, the comparisons of E2 outside. The gradients are NaN there either way:
    ``dscan_chunk_bwd_kernel`` multiplies by d̄ itself (∂L/∂u = −η s d̄, ρ). Checking w for NaN and ∞ here cost 450
    SASS instructions a thread offline (1712 → 2160). The forward computes the iterates as this kernel does
    (``_iterates``, the same PREFIX and PREC).
    """
    if MASK != 0:
        i_c, i_h, t0, t1, m_k, dp, et, st = _chunk_program(cu, chunk_idx, d_prior, eta, H, K, BK, BT)
        kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Rx, gamx, Mi = _chunk_operands(
            k, beta, alpha, Md, t0, t1, i_h, H, K, BK, BT, HAS_ALPHA)
        inside = _load_rows(clipm, t0, t1, i_h, H, K, BT, BK) != 0.0
        direct = tl.where(inside, _load_rows(dw, t0, t1, i_h, H, K, BT, BK) * kk, 0.0)
    else:
        i_c, i_h, t0, t1, m_k, dp, et, st, kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar = (
            _chunk_from_carry(k, beta, alpha, eta, d_prior, Md, Dc, cu, chunk_idx, H, K, BK, BT, HAS_ALPHA, PREC,
                              PREFIX))
        gw = _load_rows(dw, t0, t1, i_h, H, K, BT, BK)
        p, direct = _chunk_direct(kk, dbar, gw, d_min, d_max)
    s0, e0 = _chunk_adjoint_parts(uh, u, R, Mi, direct, et, BT, PREC)
    tl.store(G0 + st, tl.sum(gam[:, None] * e0, axis=0), mask=m_k)
    tl.store(S0 + (t0 + tl.arange(0, BT)) * H + i_h, s0, mask=m_t)


@triton.jit
def dscan_chunk_bwd_walk_kernel(
    k, beta, alpha, eta, Md, G0, ddT, cu, chunk_off, Zc, dd0,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, HAS_DDT: tl.constexpr, STORE_ZC: tl.constexpr = True,
):
    """Serial adjoint carry over the chunks in reverse; grid (N, H).

    z ← g⁰ + Γ_n z − η Uᵀ (Γ ⊙ M_dᵀ (R(n, ·) ⊙ Û z)) per chunk (see ``dscan_chunk_bwd_pre_kernel``), starting from
    z = ∂L/∂d_T (or 0). Writes Zc [NT, H, K] (fp32): the z_n entering each chunk from the right, and
    dd0 = ∂L/∂d_0 [N, H, K]. Without STORE_ZC, Zc is not written (the two-level carry's pass for the offsets).
    """
    i_n, i_h, bos, eos = _seq_head(cu)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    et = tl.load(eta + i_h).to(tl.float32)
    if HAS_DDT:
        z = tl.load(ddT + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        z = tl.zeros([BK], dtype=tl.float32)
    nc = tl.cdiv(eos - bos, BT)
    t0 = bos + (nc - 1) * BT  # the last chunk; for an empty sequence nothing is read (rows [t0, t0))
    kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t0, tl.where(nc > 0, eos, t0), i_h, H, K, BT, BK, HAS_ALPHA)
    g0 = tl.load(G0 + ((c_off + nc - 1) * H + i_h) * K + o_k, mask=m_k & (o_k * 0 + nc > 0), other=0.0)
    for cc in range(0, nc):
        c = nc - 1 - cc
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        st = ((c_off + c) * H + i_h) * K + o_k
        if STORE_ZC:
            tl.store(Zc + st, z, mask=m_k)
        kk, b, k2, u, uh, s_safe, nz = _keys_of(kr, br)
        gam, rn, gam_n = _gate_last(ar.to(tl.float32), t0, t1, BT, HAS_ALPHA)
        Mi = mr.to(tl.float32)
        g0c = g0
        # the previous chunk's loads (a full chunk; none before the first), issued ahead of this chunk's arithmetic
        tp1 = tl.where(c > 0, t0, t0 - BT)
        kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t0 - BT, tp1, i_h, H, K, BT, BK, HAS_ALPHA)
        g0 = tl.load(G0 + st - H * K, mask=m_k & (o_k * 0 + c > 0), other=0.0)
        x = rn * tl.sum(uh * z[None, :], axis=1)
        s1 = tl.sum(Mi * x[:, None], axis=0)
        z = g0c + gam_n * z - et * tl.sum((gam * s1)[:, None] * u, axis=0)
    tl.store(dd0 + (i_n * H + i_h) * K + o_k, z, mask=m_k)


@triton.jit
def _segment_start(k, beta, alpha, eta, Md, cu_seg, i_s, i_h, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
                   BT: tl.constexpr, HAS_ALPHA: tl.constexpr, LOAD_MD: tl.constexpr = True):
    """What a map kernel's program starts segment i_s of head i_h with: its rows [bos, eos), η, its number of chunks
    and the first chunk's loads (``_carry_loads``; an empty segment reads nothing, rows [bos, bos))."""
    bos = tl.load(cu_seg + i_s).to(tl.int64)
    eos = tl.load(cu_seg + i_s + 1).to(tl.int64)
    et = tl.load(eta + i_h).to(tl.float32)
    nc = tl.cdiv(eos - bos, BT)
    kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, bos, tl.where(nc > 0, tl.minimum(bos + BT, eos), bos), i_h, H, K,
                                  BT, BK, HAS_ALPHA, LOAD_MD)
    return bos, eos, et, nc, kr, br, ar, mr


@triton.jit
def dscan_chunk_map_kernel(
    k, beta, alpha, eta, Md, cu_seg, Phi, Zb, Sp,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr,
    HAS_ALPHA: tl.constexpr, PREC: tl.constexpr, GROUPS: tl.constexpr = False, bad=None, FLAGGED: tl.constexpr = False,
):
    """The carry's linear map composed over each segment's chunks (two-level carry); grid (NS · ⌈K / BN⌉, H).

    Over one chunk the forward carry ``dscan_chunk_fwd_kernel`` is affine in the entering deviation,
    δ ← A δ + c with A = Γ_n I − η Ûᵀ diag(R(n, ·)) M_d diag(Γ) U (C1). This program multiplies BN columns of the
    identity by A of every chunk of segment i_s in order, Φ ← Γ_n Φ − η Ûᵀ (R(n, ·) ⊙ M_d (Γ ⊙ U Φ)), and writes
    those columns of Phi [NS, H, K, K] (fp32; row i, column j: ∂(leaving)_i / ∂(entering)_j). Products in precision
    PREC (``_map_config``).

    The reverse carry ``dscan_chunk_bwd_walk_kernel`` is z ← Aᵀ z + g⁰ over the chunks from the right, so its
    segment map is A_1ᵀ ⋯ A_nᵀ = (A_n ⋯ A_1)ᵀ = Φᵀ: the backward reads the forward's Phi transposed
    (``dscan_chunk_seg_kernel`` with REVERSE) and composes no maps of its own.

    The segments' offsets (the carry from 0) come from ``dscan_chunk_fwd_kernel``'s own pass: walked here too, in the
    first column block's program, they took this kernel 0.489 → 0.726 ms at (1, 32768, 16, 128) against 0.142 ms
    saved in the carry (H200, bf16, fwd+bwd 5.777 → 5.849; reports/gpu-run-run14-NVIDIA-H200.log, call 2): the
    offsets' K-reductions across 8 warps sit on the maps' chain. Advancing two or four chunks a step (the product of
    the chunk maps as g I − η Σ_j U_jᵀ z_j, the z's off the chain, Φ laid out once a step for independent products)
    was slower too: 0.489 → 0.771 / 0.857 ms (255 registers and 24 / 144 B of stack against 196; run14 log, call 6;
    the code is in the history, b7730ba). So was the transposed form, Ψ = Φᵀ ← Γ_n Ψ − η (Ψ Yᵀ) diag(R(n, ·) / ‖k‖²) U
    with Ψ the left operand of warp-group products (142 registers offline with Triton 3.6, Ψ still staged through
    shared memory): 0.495 → 0.599 ms, 0.552 capped at 128 registers (two programs an SM; run15 log, calls 1, 2;
    the code is in the history, c7dc1fc).

    With GROUPS, BT is a group of scan chunks and each step applies the group's map Γ_g I − P Z from the factors of
    ``dscan_chunk_group_kernel`` (Z [T, H, K] and s_p [T, H], the rows of Pᵀ s_p ⊙ U): Φ ← Γ_g Φ − P (Z Φ), two
    products of depth BT on the chain per group.

    With FLAGGED only the segments that ``dscan_chunk_map_f16_kernel`` flagged in ``bad`` [NS, H] are composed (its
    fallback where a float16 operand overflowed); the other programs return at once.
    """
    # grid (NS · ⌈K / BN⌉, H), the column block varying fastest: a segment's programs run together and share its
    # key and M_d reads through L2
    NJ: tl.constexpr = (K + BN - 1) // BN
    i_s = tl.program_id(0) // NJ
    i_j = tl.program_id(0) % NJ
    i_h = tl.program_id(1)
    if FLAGGED:
        if tl.load(bad + i_s * H + i_h) == 0:
            return
    bos, eos, et, nc, kr, br, ar, mr = _segment_start(k, beta, alpha, eta, Md, cu_seg, i_s, i_h, H, K, BK, BT,
                                                      HAS_ALPHA, LOAD_MD=not GROUPS)
    o_k = tl.arange(0, BK)
    o_j = i_j * BN + tl.arange(0, BN)
    phi = tl.where(o_k[:, None] == o_j[None, :], 1.0, 0.0)
    for c in range(0, nc):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        kf = kr.to(tl.float32)
        k2 = kf * kf
        sq = tl.sum(k2, axis=1)
        u = br.to(tl.float32)[:, None] * k2  # U = β k² (D4); Û = diag(1/‖k‖²) U, 0 where k = 0
        gam, rn, gam_n = _gate_last(ar.to(tl.float32), t0, t1, BT, HAS_ALPHA)
        rnh = tl.where(sq > 0, rn / tl.where(sq > 0, sq, 1.0), 0.0)  # R(n, ·) / ‖k‖² (one chunk a step only)
        if GROUPS:
            o_r = tl.arange(0, BT)
            m_r = (t0 + o_r) < t1
            zr = tl.load(Zb + ((t0 + o_r[:, None]) * H + i_h) * K + o_k[None, :],
                         mask=m_r[:, None] & (o_k < K)[None, :], other=0.0)
            spr = tl.load(Sp + (t0 + o_r) * H + i_h, mask=m_r, other=0.0)
            kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t1, tl.minimum(t1 + BT, eos), i_h, H, K, BT, BK,
                                          HAS_ALPHA, LOAD_MD=False)
            y = tl.dot(zr, phi, input_precision=PREC)
            phi = gam_n * phi - tl.dot(tl.trans(spr[:, None] * u), y, input_precision=PREC)
        else:
            Mi = mr.to(tl.float32)
            # the next chunk's loads (none past the end), issued before this chunk's products
            kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t1, tl.minimum(t1 + BT, eos), i_h, H, K, BT, BK,
                                          HAS_ALPHA)
            # A = Γ_n I − η Uᵀ diag(R(n, ·) / ‖k‖²) M_d diag(Γ) U: only U [BT, BK] stays live, and Y (not depending
            # on Φ) leaves two products on the chain from Φ to Φ
            Y = tl.dot(Mi * gam[None, :], u, input_precision=PREC)
            y = tl.dot(Y, phi, input_precision=PREC)
            y = tl.dot(tl.trans(u), rnh[:, None] * y, input_precision=PREC)
            phi = gam_n * phi - et * y
    tl.store(Phi + ((i_s.to(tl.int64) * H + i_h) * K + o_k[:, None]) * K + o_j[None, :], phi,
             mask=(o_k[:, None] < K) & (o_j[None, :] < K))


@triton.jit
def dscan_chunk_map_f16_kernel(
    k, beta, alpha, eta, Md, cu_seg, Phi, bad,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, HAS_ALPHA: tl.constexpr,
    BR: tl.constexpr = 0,
):
    """``dscan_chunk_map_kernel``'s maps composed transposed, with float16 operands; grid (NS · ⌈BK / BR⌉, H), BR rows
    of Ψ (columns of Φ) a program, all BK (BR = 0) by default. A/B switch OSDN_DSCAN_MAP_F16=1 (off by default; not yet
    timed on a GPU), OSDN_DSCAN_MAP_F16_ROWS for BR.

    Ψ = Φᵀ steps Ψ ← Γ_n Ψ − η (Ψ Ûᵀ) W Û with W = diag(‖k‖² Γ) M_dᵀ diag(R(n, ·)) [BT, BT] (C1: the transpose of
    A = Γ_n I − η Uᵀ diag(R(n, ·) / ‖k‖²) M_d diag(Γ) U, with U = diag(‖k‖²) Û). Ψ (float32, the loop's accumulator)
    is the left operand of both products on the chain, rounded to float16 in registers: compiled offline for sm_90
    (Triton 3.6, 8 warps) both are warp-group products with that operand in registers, so Ψ is not staged through
    shared memory every step as Φ is in ``dscan_chunk_map_kernel`` (whose time, 0.49 ms at (1, 32768, 16, 128) on an
    H100, is bound by shared memory: Nsight Compute, L1 74 % busy, reports/ncu-detail-NVIDIA-H200-run16.txt).
    float16 rounds like TF32 (11 significant bits) but ends at 65504: Û (entries in [0, β]) and Ψ (entries at most
    about 1 while the learner is stable, spec "Numerical ranges") fit; the small product with W, whose scale follows
    ‖k‖², is in TF32. Where a segment's Ψ is not finite at the end (an operand overflowed, or NaN came in), it is
    flagged in ``bad`` [NS, H] (int32, zeroed before) and ``dscan_chunk_map_kernel`` recomputes that segment (its
    FLAGGED mode).

    The rows of Ψ evolve independently (row r: Ψ_r ← Γ_n Ψ_r − η (Ψ_r Ûᵀ) W Û), so a program may hold BR of them: at
    BR = 64 and 4 warps a program is one warp group with half the map (offline: 166 registers, no stack, three programs
    an SM; 122 at 8 warps, two), and twice the programs share the SMs.
    """
    RB: tl.constexpr = BK if BR == 0 else BR
    NR: tl.constexpr = BK // RB
    i_s = tl.program_id(0) // NR
    i_r = tl.program_id(0) % NR
    i_h = tl.program_id(1)
    bos, eos, et, nc, kr, br, ar, mr = _segment_start(k, beta, alpha, eta, Md, cu_seg, i_s, i_h, H, K, BK, BT,
                                                      HAS_ALPHA)
    o_k = tl.arange(0, BK)
    o_r = i_r * RB + tl.arange(0, RB)
    psi = tl.where(o_r[:, None] == o_k[None, :], 1.0, 0.0)
    for c in range(0, nc):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        _, _, _, _, uh, s_safe, _ = _keys_of(kr, br)  # Û (0 where k = 0, whose ‖k‖² is then taken as 1)
        gam, rn, gam_n = _gate_last(ar.to(tl.float32), t0, t1, BT, HAS_ALPHA)
        W = tl.trans(mr.to(tl.float32)) * (s_safe * gam)[:, None] * rn[None, :]  # diag(‖k‖² Γ) M_dᵀ diag(R(n, ·))
        # the next chunk's loads (none past the end), issued before this chunk's products
        kr, br, ar, mr = _carry_loads(k, beta, alpha, Md, t1, tl.minimum(t1 + BT, eos), i_h, H, K, BT, BK, HAS_ALPHA)
        uh16 = uh.to(tl.float16)
        z = tl.dot(psi.to(tl.float16), tl.trans(uh16))  # Ψ Ûᵀ [RB, BT]
        z = tl.dot(z, W, input_precision="tf32")
        psi = gam_n * psi - et * tl.dot(z.to(tl.float16), uh16)
    # Φ = Ψᵀ: element (a, b) of Ψ is row b, column a of Phi [NS, H, K, K]
    m = (o_r[:, None] < K) & (o_k[None, :] < K)
    tl.store(Phi + ((i_s.to(tl.int64) * H + i_h) * K + o_k[None, :]) * K + o_r[:, None], psi, mask=m)
    fin = tl.where(m, (psi == psi) & (tl.abs(psi) < float("inf")), True)
    if tl.min(tl.min(fin.to(tl.int32), axis=1), axis=0) == 0:
        tl.atomic_max(bad + i_s * H + i_h, 1)


@triton.jit
def dscan_chunk_group_kernel(
    k, beta, alpha, eta, Md, cu_seg, Zb, Sp,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, GS: tl.constexpr,
    HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
):
    """Factors of the product of GS consecutive chunk maps (a group of a segment, from its start); grid (NS, groups a
    segment at most, H).

    Chunk c's map is A_c = Γ_c I − P_c Y_c with P_c = η U_cᵀ diag(R(n_c, ·) / ‖k‖²) and Y_c = M_d diag(Γ) U_c (C1,
    ``dscan_chunk_map_kernel``). Their product over the group is B = Γ_g I − Σ_c P_c Z_c: B_m = Γ_m B_{m−1} −
    P_m (Y_m B_{m−1}) gives the new factor W_m = Γ_{<m} Y_m − Σ_{c<m} (Y_m P_c) Γ_{(c,m)} W_c (Γ_{<m}: the chunk gates
    before m, Γ_{(c,m)}: those strictly between), and Z_c = Γ_{>c} W_c. So (I + C) W = Γ_< ⊙ Y with C strictly block
    lower, C[m, c] = (Y_m P_c) Γ_{(c,m)}, and C^GS = 0: W = Σ_{j<GS} (−C)^j (Γ_< ⊙ Y), GS − 1 products of [BG, BG] once
    and one product per key block. Writes Z [T, H, K] (row t: the row of Z_c for token t) and s_p = η R(n_c, t) /
    ‖k_t‖² [T, H] (P_c's rows are s_p ⊙ u), float32. Gate factors are products of the chunk gates Γ_c (no quotients,
    spec §6). Rows past the segment's end are padding (k = 0, α = 1): they add nothing and scale nothing.
    The forward substitution over the chunks (GS dependent products per key block, 5e9e337) took 0.683 ms at
    (1, 32768, 16, 128), GS = 4 (H200, run15 log, call 7); this form 0.513 ms (0.807 at 8 warps), 0.338 at GS = 2
    (run16 log, call 1).
    """
    BG: tl.constexpr = BT * GS
    # key columns a block: Y is formed twice, for Y Uᵀ and then for Z = T Y, instead of held whole ([BG, BK] float32)
    BKC: tl.constexpr = 64 if BK > 64 else BK
    i_s = tl.program_id(0)
    i_g = tl.program_id(1)
    i_h = tl.program_id(2)
    bos = tl.load(cu_seg + i_s).to(tl.int64)
    eos = tl.load(cu_seg + i_s + 1).to(tl.int64)
    t0 = bos + i_g * BG
    t1 = tl.maximum(tl.minimum(t0 + BG, eos), t0)  # an empty group (past the segment) reads and writes nothing
    et = tl.load(eta + i_h).to(tl.float32)
    o_r = tl.arange(0, BG)
    m_r = (t0 + o_r) < t1
    b = tl.load(beta + (t0 + o_r) * H + i_h, mask=m_r, other=0.0).to(tl.float32)
    _, R, gam, _, _ = _gate_ratios(alpha, t0, t1, i_h, H, BG, HAS_ALPHA)  # over the group: R(i, j), Γ from its start
    cid = o_r // BT
    cs = cid * BT  # first row of each row's chunk
    ne = cs + BT - 1  # last row of each row's chunk (padding past the end has α = 1: the same ratios)
    gw = tl.where(cs == 0, gam, tl.sum(tl.where(o_r[None, :] == (cs - 1)[:, None], R, 0.0), axis=1))  # Γ in chunk
    gne = tl.sum(tl.where(o_r[:, None] == ne[None, :], gw[:, None], 0.0), axis=0)  # Γ_c of each row's chunk c
    rn = tl.sum(tl.where(o_r[:, None] == ne[None, :], R, 0.0), axis=0)  # R(n_c, r)
    # products of the chunk gates: Γ_{<c} and Γ_{>c} per row, Γ_{(c,m)} per pair of rows
    gpre = tl.full([BG], 1.0, dtype=tl.float32)
    gpost = tl.full([BG], 1.0, dtype=tl.float32)
    F = tl.full([BG, BG], 1.0, dtype=tl.float32)
    for l in tl.static_range(GS):
        g_l = tl.sum(tl.where(o_r == l * BT, gne, 0.0), axis=0)
        gpre = tl.where(cid > l, gpre * g_l, gpre)
        gpost = tl.where(cid < l, gpost * g_l, gpost)
        F = tl.where((cid[None, :] < l) & (cid[:, None] > l), F * g_l, F)
    mbd = tl.load(Md + ((t0 + o_r[:, None]) * H + i_h) * BT + (o_r % BT)[None, :],
                  mask=m_r[:, None] & (cid[:, None] == cid[None, :]), other=0.0)  # blockdiag of the chunks' M_d
    # Y Uᵀ (all chunks' blocks) and ‖k‖², over the key columns
    ss = tl.zeros([BG], dtype=tl.float32)
    YU = tl.zeros([BG, BG], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BKC)):
        o_k = i_k * BKC + tl.arange(0, BKC)
        kk = tl.load(k + ((t0 + o_r[:, None]) * H + i_h) * K + o_k[None, :], mask=m_r[:, None] & (o_k < K)[None, :],
                     other=0.0).to(tl.float32)
        k2 = kk * kk
        ss += tl.sum(k2, axis=1)
        u = b[:, None] * k2
        Y = tl.dot(mbd, gw[:, None] * u, input_precision=PREC)
        YU += tl.dot(Y, tl.trans(u), input_precision=PREC)
    nz = ss > 0
    sp = tl.where(nz, et * rn / tl.where(nz, ss, 1.0), 0.0)
    C = tl.where(cid[:, None] > cid[None, :], YU * sp[None, :] * F, 0.0)  # blocks (Y_m P_c) Γ_{(c,m)}, c < m
    # Tm = Σ_{j<GS} (−C)^j = (I + C)^{-1} (C is nilpotent of order GS)
    Pw = tl.where(o_r[:, None] == o_r[None, :], 1.0, 0.0)
    Tm = Pw
    for j in tl.static_range(1, GS):
        Pw = -tl.dot(Pw, C, input_precision=PREC)
        Tm += Pw
    Tm = gpost[:, None] * Tm * gpre[None, :]  # Z = diag(Γ_>) (I + C)^{-1} diag(Γ_<) Y
    for i_k in range(0, tl.cdiv(K, BKC)):
        o_k = i_k * BKC + tl.arange(0, BKC)
        m_k = o_k < K
        kk = tl.load(k + ((t0 + o_r[:, None]) * H + i_h) * K + o_k[None, :], mask=m_r[:, None] & m_k[None, :],
                     other=0.0).to(tl.float32)
        Y = tl.dot(mbd, gw[:, None] * (b[:, None] * kk * kk), input_precision=PREC)
        Z = tl.dot(Tm, Y, input_precision=PREC)
        tl.store(Zb + ((t0 + o_r[:, None]) * H + i_h) * K + o_k[None, :], Z, mask=m_r[:, None] & m_k[None, :])
    tl.store(Sp + (t0 + o_r) * H + i_h, sp, mask=m_r)


@triton.jit
def dscan_chunk_seg_kernel(
    Phi, Cs, x0, d_prior, seg_ptr, Xs,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
    HAS_X0: tl.constexpr, X0_MINUS_DP: tl.constexpr, REVERSE: tl.constexpr,
):
    """The serial level of the two-level carry of C1; grid (N, H): walks sequence i_n's segments, x ← Φ_s x + c_s
    with the composed maps Φ_s (``dscan_chunk_map_kernel``) and offsets c_s (the carry run over segment s from 0),
    or with REVERSE from the right, x ← Φ_sᵀ x + c_s (the adjoint carry's map is the transpose of the forward's),
    starting from x0 [N, H, K] (minus d° with X0_MINUS_DP: the forward's d_0; the reverse's ∂L/∂d_T) or 0. Writes
    Xs [NS, H, K] (fp32): the x entering every segment."""
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    s0 = tl.load(seg_ptr + i_n)
    s1 = tl.load(seg_ptr + i_n + 1)
    if HAS_X0:
        x = tl.load(x0 + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        if X0_MINUS_DP:
            x = x - tl.load(d_prior + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BK], dtype=tl.float32)
    for ss in range(0, s1 - s0):
        if REVERSE:
            s = (s1 - 1 - ss).to(tl.int64)
        else:
            s = (s0 + ss).to(tl.int64)
        tl.store(Xs + (s * H + i_h) * K + o_k, x, mask=m_k)
        ph = tl.load(Phi + ((s * H + i_h) * K + o_k[:, None]) * K + o_k[None, :], mask=m_k[:, None] & m_k[None, :],
                     other=0.0)
        if REVERSE:
            x = tl.sum(ph * x[:, None], axis=0)  # Φᵀ x
        else:
            x = tl.sum(ph * x[None, :], axis=1)
        x = x + tl.load(Cs + (s * H + i_h) * K + o_k, mask=m_k, other=0.0)


@triton.jit
def dscan_chunk_bwd_kernel(
    k, beta, alpha, eta, d_prior, Md, Dc, Zc, S0, dw, cu, chunk_idx, d_min, d_max,
    dk, dbeta, dk_out, dbeta_out, dalpha, peta, pdp,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_ALPHA: tl.constexpr, PREC: tl.constexpr,
):
    """Reverse mode of C1 for every chunk at once, from its entering δ⁰ (Dc), exiting adjoint z_n (Zc) and the
    z-independent s⁰ (S0, from ``dscan_chunk_bwd_pre_kernel``); grid (NT, H).

    Writes dk_out = dk + (this part) [T, H, K] and dbeta_out = dbeta + (this part) [T, H] in the outputs' dtypes
    (the input dtype of k and β: the sums are formed in float32 and rounded once; ``dk_out`` may be ``dk``),
    dalpha [T, H] and per-chunk partial sums peta [NT, H] (∂L/∂η) and, with α, pdp [NT, H, K] (∂L/∂d° through E1;
    0 without α, and not written), reduced per sequence by ``dscan_chunk_sum_kernel``. Formulas: module docstring.
    The clip of E2 passes the gradient strictly inside d_min < d̄ < d_max.

    It is bound by instruction issue (Nsight Compute, (1, 32768, 16, 128), bf16, H200: 0.37 instructions a cycle per
    scheduler with two warps each, 3016 SASS instructions a thread in the tile form of then;
    reports/gpu-run-run16-NVIDIA-H200.log, call 2). A variant over key blocks of 64 or 32 columns (the row sums and
    U Uᵀ first, ρ from them, each block's gradients with the term in cst held back; 240 / 210 registers without stack
    offline) was slower: 0.572 → 0.818 / 1.05 ms (call 3; history 147ab67).

    It forms ∂L/∂k and ∂L/∂β from per-row factors: ⟨k², d̄⟩ once for ρ and ∂L/∂β, then ∂L/∂k = ∂L/∂K̃ ⊙ p + k ⊙ (c₁ d̄
    + c₂ z + c₃) with c₁, c₂, c₃ per row, instead of forming ∂L/∂u and ∂L/∂û as [C, K] tiles first (history 583cc05,
    ``OSDN_DSCAN_BWD_FACTORED=0``). Offline (sm_90, Triton 3.6, bf16, scan chunk 16, K = 128, 2 warps) 3016 → 2688 SASS
    instructions a thread (gated 3776 → 3376, stack 328 → 152 B; K = 64 at 1 warp: stack 160 → 0 B). Same-run A/Bs
    on an H100 80GB HBM3, bf16: ungated (1, 32768, 16, 128) this kernel 0.591 → 0.507 ms
    (reports/gpu-run-run17-NVIDIA-H100-80GB-HBM3.log); gated with APF (run18 log, with bwd_pre's mask off the write
    keys, row "old") 0.736 → 0.621 ms at (8, 4096, 16, 128), 0.771 → 0.689 at (16, 2048, 32, 64), 0.737 → 0.611 at
    (1, 32768, 16, 128). Same math, other rounding: ∂L/∂k moved by up to 3.0e-3 of its max, ∂L/∂β 8.9e-4 (bf16).
    """
    i_c, i_h, t0, t1, m_k, dp, et, st, kk, b, k2, u, uh, s_safe, nz, m_t, a, R, gam, Mi, dev, dbar = _chunk_from_carry(
        k, beta, alpha, eta, d_prior, Md, Dc, cu, chunk_idx, H, K, BK, BT, HAS_ALPHA, PREC)
    z = tl.load(Zc + st, mask=m_k, other=0.0)
    gw = _load_rows(dw, t0, t1, i_h, H, K, BT, BK)
    p, direct = _chunk_direct(kk, dbar, gw, d_min, d_max)
    o_t = tl.arange(0, BT)
    s0 = tl.load(S0 + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    last = o_t[:, None] == (t1 - t0 - 1)
    rn = tl.sum(tl.where(last, R, 0.0), axis=0)  # R(n, i)
    # transposed C1 with the z_n part: s = M_dᵀ (b⁰ + R(n, ·) ⊙ Û z_n) = s⁰ + M_dᵀ (R(n, ·) ⊙ Û z_n)
    s = s0 + tl.sum(Mi * (rn * tl.sum(uh * z[None, :], axis=1))[:, None], axis=0)
    e = direct - (et * s)[:, None] * u
    G = tl.dot(tl.trans(R), e, input_precision=PREC) + rn[:, None] * z[None, :]  # ∂L/∂d̄_{i-1}
    zi = G - e  # ∂L/∂d_i
    # E8: d_i = d̄ + η ρ(d̄) û,  u = β k², û = β k² / ‖k‖²; ∂L/∂k and ∂L/∂β from per-row factors gathered first
    kd = tl.sum(k2 * dbar, axis=1)  # ⟨k², d̄⟩
    rho = 1.0 - b * kd  # E7 at the learner's point
    cu_ = et * rho / s_safe
    cst = cu_ * tl.sum(tl.where(nz[:, None], zi * k2, 0.0), axis=1)
    tb = 2.0 * b
    # ∂L/∂k = ∂L/∂K̃ ⊙ p + 2 β k ⊙ (−η s d̄ + [k ≠ 0] (η ρ z − cst) / ‖k‖²), per-row factors first
    r1 = tl.where(nz, tb * cu_, 0.0)
    r0 = tl.where(nz, -(tb / s_safe) * cst, 0.0)
    g_k = gw * p + kk * ((-(tb * et * s))[:, None] * dbar + r1[:, None] * zi + r0[:, None])
    g_b = -(et * s) * kd + cst
    _store_rows(dk_out, (_load_rows(dk, t0, t1, i_h, H, K, BT, BK) + g_k).to(dk_out.dtype.element_ty), t0, t1, i_h,
                H, K, BT, BK)
    p_b = (t0 + o_t) * H + i_h
    tl.store(dbeta_out + p_b, (tl.load(dbeta + p_b, mask=m_t, other=0.0) + g_b).to(dbeta_out.dtype.element_ty),
             mask=m_t)
    tl.store(peta + i_c.to(tl.int64) * H + i_h, tl.sum(tl.where(m_t, rho * s, 0.0), axis=0))
    # E1: d̄ = d° + α (d − d°)
    if HAS_ALPHA:
        tl.store(dalpha + (t0 + o_t) * H + i_h, tl.sum(G * dev, axis=1), mask=m_t)
        tl.store(pdp + st, tl.sum(tl.where(m_t[:, None], (1.0 - a)[:, None] * G, 0.0), axis=0), mask=m_k)


@triton.jit
def dscan_chunk_sum_kernel(peta, pdp, chunk_off, deta, ddp, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
                           BC: tl.constexpr, HAS_ALPHA: tl.constexpr):
    """deta [N, H] (∂L/∂η, E8) and ddp [N, H, K] (∂L/∂d° through E1): the per-chunk partials summed over each
    sequence's chunks, BC chunks at a time in a fixed order (deterministic, no atomics); grid (N, H, ⌈K / BK⌉), one
    program per (sequence, head, block of BK key columns), the first block also summing deta. Without α, ddp is 0
    (E1 has no d° term) and pdp is not read.

    With one block of all K columns a program (grid (N, H), 16 chunks a step) this kernel took 0.178 ms on the gated
    problem at (1, 32768, 16, 128) (H100, reports/gpu-run-run18-NVIDIA-H100-80GB-HBM3.log): 16 programs walking 2048
    chunks; ``_sum_config`` now spreads the key columns over programs."""
    i_n = tl.program_id(0)
    i_h = tl.program_id(1)
    i_k = tl.program_id(2)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    o_c = tl.arange(0, BC)
    c0 = tl.load(chunk_off + i_n).to(tl.int64)
    c1 = tl.load(chunk_off + i_n + 1).to(tl.int64)
    ce = tl.where(i_k == 0, c1, c0)  # the first key block sums deta, the others read no partial of it
    se = tl.zeros([BC], dtype=tl.float32)
    sp = tl.zeros([BC, BK], dtype=tl.float32)
    for c in range(c0, c1, BC):
        m_c = (c + o_c) < c1
        se += tl.load(peta + (c + o_c) * H + i_h, mask=(c + o_c) < ce, other=0.0)
        if HAS_ALPHA:
            sp += tl.load(pdp + ((c + o_c[:, None]) * H + i_h) * K + o_k[None, :], mask=m_c[:, None] & m_k[None, :],
                          other=0.0)
    if i_k == 0:
        tl.store(deta + i_n * H + i_h, tl.sum(se, axis=0))
    tl.store(ddp + (i_n * H + i_h) * K + o_k, tl.sum(sp, axis=0), mask=m_k)


def _sum_config(BK: int, has_alpha: bool) -> tuple:
    """Key columns a program, chunks a step and warps of ``dscan_chunk_sum_kernel``: with α, 16 columns and 64 chunks
    a step at 2 warps ([64, 16] float32 partials of ∂L/∂d°, 8 programs per (sequence, head) at K = 128); without,
    all columns (zeros) and 128 chunks a step at 1 warp. Env OSDN_DSCAN_SUM_BK sets the columns a program with α
    (A/B: 128 is the one-block layout of before, at these chunks a step and warps)."""
    return (min(BK, _env("OSDN_DSCAN_SUM_BK", 16)), 64, 2) if has_alpha else (BK, 128, 1)


# ---------------------------------------------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------------------------------------------

def _kernel_warps(C: int, BK: int, warps: int) -> dict:
    """Warps of each d-scan kernel for scan chunk C, key block BK and the chunk-parallel default ``warps``.

    The M_d kernel runs 1 warp, the reverse carry 2 at C = 16, and at K <= 64 the two chunk-parallel backward kernels
    run 1. Same-run A/Bs on an H200 (bf16; reports/gpu-run-run8-NVIDIA-H100-H200.log):
    - call 6, fwd+bwd 4.756 ms at (16, 2048, 32, 64) and 5.064 at (8, 4096, 16, 128) with the earlier 2 / 4 / 2 / 2
      (C = 16): backward kernels at 1 warp 0.490 + 0.903 → 0.342 + 0.632 ms at K = 64 (4.338 ms in all) but
      0.647 → 1.654 at K = 128; M_d at 1 warp 0.240 → 0.189 and 0.150 → 0.119; both carries at 2 warps: the reverse
      one 0.277 → 0.162 and 0.388 → 0.298, the forward one 0.157 → 0.163 and 0.309 → 0.424 (so it keeps 4); 4 warps
      were slower everywhere;
    - call 11, (1, 32768, 16, 128) (C = 32, 4 warps): M_d at 1 / 2 warps 0.520 → 0.25 / 0.24 ms (fwd+bwd 10.842 →
      10.574 / 10.565); the write-key kernel at 2 warps 0.184 → 0.229, the backward pair at 2 0.745 → 9.346, the
      reverse carry at 2 1.724 → 1.935 (all kept at ``warps`` / 4).
    - ninth session (reports/gpu-run-run10-NVIDIA-H200-H100.log, call 2; with the write-key kernel's prefix sum): the
      write-key kernel at 4 warps for K > 64, 0.179 → 0.148 ms at (8, 4096, 16, 128) (fwd+bwd 4.723 → 4.697) but
      0.144 → 0.157 at (16, 2048, 32, 64); the backward pair at 4 warps still slower (4.723 → 4.869, 3.767 → 4.167).
    The two-level carry's serial level (``dscan_chunk_seg_kernel``) runs 8 (4: 0.119 → 0.112 ms at (1, 32768, 16, 128),
    within noise of fwd+bwd; run14 log, call 2).
    The two-level carry's second forward pass, which writes the write keys (``_fuse_out``), runs 2 (4: 0.294 ms, 8:
    0.44, against 0.214; run15 log, call 2).
    Env OSDN_DSCAN_{PREP,FWD,OUT,WALK,BWD,SEG,FUSED}_WARPS override each.
    """
    c16 = C == 16
    return dict(prep=_env("OSDN_DSCAN_PREP_WARPS", 1), fwd=_env("OSDN_DSCAN_FWD_WARPS", 4),
                out=_env("OSDN_DSCAN_OUT_WARPS", 4 if BK > 64 else warps),
                walk=_env("OSDN_DSCAN_WALK_WARPS", 2 if c16 else 4),
                bwd=_env("OSDN_DSCAN_BWD_WARPS", 1 if BK <= 64 else warps),
                seg=_env("OSDN_DSCAN_SEG_WARPS", 8), fused=_env("OSDN_DSCAN_FUSED_WARPS", 2))


def _pre_maxnreg(warps: int) -> dict:
    """Register cap of ``dscan_chunk_bwd_pre_kernel``: 168 at 2 warps (scan chunk 16, K > 64), where it needs 216
    (offline sm_90 compile, no stack) and so holds 4 programs an SM; at 168 (32 B of stack) it holds 6. Same-run
    A/B on an H200, bf16 (reports/gpu-run-run14-NVIDIA-H200.log, call 3): bwd_pre 0.432 → 0.356 ms (128: 0.351, 208 B
    of stack), fwd+bwd 5.786 → 5.716 ms at (1, 32768, 16, 128) and 4.156 → 4.087 at (8, 4096, 16, 128). The same caps
    slowed ``dscan_chunk_bwd_kernel`` (255 registers and 48 B of stack uncapped): 0.58 → 0.78 / 1.40 ms at 168 / 128.
    At 1 warp (K <= 64) it needs 168 anyway; 4 warps (scan chunk 32) were not measured and stay uncapped. Env
    OSDN_DSCAN_PRE_MAXNREG (0: none), OSDN_DSCAN_BWD_MAXNREG for the backward kernel (A/B only)."""
    return _maxnreg("OSDN_DSCAN_PRE_MAXNREG", 168 if warps == 2 else 0)


def _fuse_out() -> bool:
    """Whether the two-level carry's second pass writes the write keys itself (``dscan_chunk_fwd_kernel`` with
    STORE_W, 2 warps) instead of ``dscan_chunk_out_kernel`` after it (env OSDN_DSCAN_FUSE_OUT, default on). Same-run
    A/B on an H200, bf16, (1, 32768, 16, 128) (reports/gpu-run-run15-NVIDIA-H200.log, calls 2, 3): the pass and the
    write keys 0.145 + 0.149 → 0.214 ms (4 warps: 0.294; 8: 0.44), fwd+bwd 5.632 → 5.552 and 5.618 → 5.547 ms.
    The same fusion in the reverse passes was slower (history 19db946; call 3): bwd_pre's work in the first reverse
    pass 0.351 + 0.113 → 0.584 / 0.952 / 1.685 ms at 2 / 4 / 8 warps (255 registers and 56 B of stack at 2), the
    backward kernel's in the second 0.570 + 0.113 → 1.121 / 2.011 at 4 / 8 (792 B of stack at 2): their heavy
    per-chunk work hides its latency better over many chunk-parallel programs than over 512 serial ones."""
    return bool(_env("OSDN_DSCAN_FUSE_OUT", 1))


def _clip_mask() -> bool:
    """Whether the forward stores the clip's mask [d_min < d̄ < d_max] (int8, [T, H, K]; E2) for
    ``dscan_chunk_bwd_pre_kernel``, which then neither loads δ⁰ nor recomputes the iterates (C1). Default: no. For
    the default bounds the mask comes free off the write keys (``_mask_from_w``), and the stored one bought nothing
    more: same-run A/B on an H100 80GB HBM3, bf16, (1, 32768, 16, 128) (reports/gpu-run-run17-NVIDIA-H100-80GB-HBM3.log):
    fwd+bwd 5.525 → 5.520 ms (bwd_pre 0.280 → 0.267) for 64 MiB more peak memory (1835 → 1899 MiB). For other bounds
    it is untried on a GPU. Env OSDN_DSCAN_CLIP_MASK=1 stores it on either path (the two-level carry's second pass or
    the write-key kernel), 0 never. Costs T·H·K bytes of memory from the forward to the backward."""
    return bool(_env("OSDN_DSCAN_CLIP_MASK", 0))


def _mask_from_w() -> bool:
    """Whether ``dscan_chunk_bwd_pre_kernel`` reads the clip's mask off the write keys where the bounds are the
    defaults d_min = 0, d_max = +∞ (its MASK = 2) instead of recomputing the iterates. Offline (sm_90, Triton 3.6,
    bf16, scan chunk 16, K = 128, 2 warps, the 168-register cap): 1904 → 1712 SASS instructions a thread, 24 → 72 B of
    stack (the int8 mask of ``_clip_mask``: 1616 and none, but 216 more in the forward's pass). Same-run A/B on an
    H100 80GB HBM3, bf16, (1, 32768, 16, 128) (reports/gpu-run-run17-NVIDIA-H100-80GB-HBM3.log): bwd_pre 0.343 →
    0.280 ms, fwd+bwd 5.645 → 5.525; the ungated problem bit-identical, the gated one (α, so the iterates come from a
    TF32 product in both kernels) within 1.5e-3 of its max (∂L/∂α). On the gated problem with APF (run18 log, row
    "old", with the tile form of the backward kernel too) bwd_pre 0.471 → 0.305 ms at (8, 4096, 16, 128), 0.385 →
    0.334 at (16, 2048, 32, 64), 0.470 → 0.300 at (1, 32768, 16, 128). Env OSDN_DSCAN_MASK_FROM_W (default 1)."""
    return bool(_env("OSDN_DSCAN_MASK_FROM_W", 1))


def _map_f16() -> bool:
    """Whether the segment maps of a bfloat16 problem are composed by ``dscan_chunk_map_f16_kernel`` (transposed,
    float16 operands; env OSDN_DSCAN_MAP_F16=1; default off until a GPU has timed it)."""
    return bool(_env("OSDN_DSCAN_MAP_F16", 0))


_SIDE_STREAMS: dict = {}


def _side_stream(dev):
    """A second CUDA stream of device ``dev`` (one a device, made once) for the segment maps (``_maps_beside``)."""
    if dev not in _SIDE_STREAMS:
        _SIDE_STREAMS[dev] = torch.cuda.Stream(dev)
    return _SIDE_STREAMS[dev]


def _maps_beside() -> bool:
    """Whether the segment maps run on a second CUDA stream beside the two-level carry's first pass (env
    OSDN_DSCAN_MAP_STREAM=1; default off). Measured once before, with the float32 maps (fourteenth session, run15 log
    call 4): the pass stretched 0.145 → 0.29 ms beside them, no gain, both kernels being bound by the SM's shared
    memory and L1; the float16 maps (``dscan_chunk_map_f16_kernel``) use a fraction of it, so the A/B is owed again
    with them."""
    return bool(_env("OSDN_DSCAN_MAP_STREAM", 0))


def _prefix() -> bool:
    """Whether the write-key kernel and ``dscan_chunk_bwd_pre_kernel`` form the iterates without α by a prefix sum
    (``_chunk_dev``; default yes, env OSDN_DSCAN_PREFIX=0 for the product)."""
    return bool(_env("OSDN_DSCAN_PREFIX", 1))


def scan_segment_length(C: int, NH: int, cu_host, w_dtype=torch.bfloat16) -> int:
    """Chunks per segment of the two-level carry of C1 (0: the plain serial carry) for scan chunk C, NH (sequence, head)
    pairs, packed offsets ``cu_host`` and write keys stored in ``w_dtype``.

    Few long sequences leave the card idle while one program per (sequence, head) walks every chunk (1024 steps at
    (1, 32768, 16, 128), scan chunk 32: 1.64 ms forward, 1.69 reverse on an H100). The two-level carry cuts each
    sequence into segments of ``LS`` chunks, composes each segment's linear map in parallel
    (``dscan_chunk_map_kernel``), walks the segments serially (``dscan_chunk_seg_kernel``) and reruns the carry of
    every segment from its entering value in parallel. Default: 64 chunks when NH < 64, the write keys are bfloat16
    (the maps' TF32 products, ``_map_config``, round below bfloat16's precision) and some sequence has more than 2·64
    chunks (where it runs, ``chunk.dscan_chunking`` picks scan chunk 16: segments of 1024 tokens); env
    OSDN_DSCAN_SEG sets the length for every dtype (0: off; small values for tests). Segments of 32 or 128 chunks
    were slower at (1, 32768, 16, 128), scan chunk 32: fwd+bwd 8.006 → 8.086 / 8.291 ms (H200, run11 log, call 2)."""
    if "OSDN_DSCAN_SEG" in os.environ:
        LS = _env("OSDN_DSCAN_SEG", 0)
    else:
        LS = 64 if NH < 64 and w_dtype == torch.bfloat16 else 0
    if LS <= 0 or len(cu_host) < 2:
        return 0
    max_chunks = -(-int((cu_host[1:] - cu_host[:-1]).max()) // C)
    return LS if max_chunks > 2 * LS else 0


def _map_config(BK: int, w_dtype) -> tuple:
    """Columns per program, warps and dot precision of ``dscan_chunk_map_kernel``: all columns up to 128 a program
    (8 warps at 128, else 4), 32 columns and 4 warps for K > 128. One program composing all 128 columns forms Y
    = M_d diag(Γ) U once instead of once per column block: same-run A/B on an H200, bf16, (1, 32768, 16, 128), scan
    chunk 32 (reports/gpu-run-run11-NVIDIA-H200-H100.log, call 2): maps 0.913 ms at 32 columns / 4 warps, 0.575 at
    64 / 4, 0.407 at 128 / 8; fwd+bwd 8.006 → 7.507 ms. Products in
    TF32 for bfloat16 write keys (rounding 2^-11 against bfloat16's 2^-8), 3xTF32 for float16 and IEEE float32 for
    float32 (where the two-level carry runs only when OSDN_DSCAN_SEG asks for it). Env OSDN_DSCAN_MAP_BN,
    OSDN_DSCAN_MAP_WARPS, OSDN_DSCAN_MAP_PREC; where the precision is TF32 and K <= 128, OSDN_DSCAN_MAP_F16=1 composes
    the maps transposed with float16 operands instead (``dscan_chunk_map_f16_kernel``, OSDN_DSCAN_MAP_F16_WARPS)."""
    prec = {torch.bfloat16: "tf32", torch.float16: "tf32x3"}.get(w_dtype, "ieee")
    prec = os.environ.get("OSDN_DSCAN_MAP_PREC", prec)
    BN = min(BK, _env("OSDN_DSCAN_MAP_BN", 32 if BK > 128 else BK))
    return BN, _env("OSDN_DSCAN_MAP_WARPS", 8 if BN >= 128 else 4), prec


def _segment_maps(k, beta, alpha, eta, Md, segs, H, K, BK, C, w_dtype, LS):
    """Phi [NS, H, K, K]: every segment's composed carry map (the adjoint carry's is its transpose)."""
    cu_s, _, _, _, _, NS = segs
    BN, nwm, prec = _map_config(BK, w_dtype)
    Phi = torch.empty(NS, H, K, K, device=k.device, dtype=torch.float32)
    # chunks a map step (group factors; 0: one chunk a step, no group kernel). Same-run A/B on an H200, bf16,
    # (1, 32768, 16, 128) (reports/gpu-run-run15-NVIDIA-H200.log, call 7): the map kernel 0.491 → 0.289 / 0.391 ms at
    # GS = 4 / 2, but the group kernel took 0.683 / 0.328 (its forward substitution then, 5e9e337: 255 registers and
    # 8 B of stack at 4 warps, GS dependent masked [64, 64] products per key block), so fwd+bwd 5.550 → 6.034 / 5.778:
    # off until the group kernel costs about 0.1 ms. Its Neumann form now (220 registers offline, no stack) took 0.513
    # / 0.338 ms, fwd+bwd 5.536 → 5.847 / 5.777 (reports/gpu-run-run16-NVIDIA-H200.log, call 1): still off
    GS = _env("OSDN_DSCAN_MAP_GS", 0)
    Zb = Sp = None
    if GS > 1:
        _, T, _, _ = k.shape
        Zb = torch.empty(1, T, H, K, device=k.device, dtype=torch.float32)
        Sp = torch.empty(1, T, H, device=k.device, dtype=torch.float32)
        if NS > 0:  # LS: chunks a segment at most
            dscan_chunk_group_kernel[(NS, cdiv(LS, GS), H)](
                k, beta, alpha, eta, Md, cu_s, Zb, Sp, H=H, K=K, BK=BK, BT=C, GS=GS, HAS_ALPHA=alpha is not None,
                PREC=prec, num_warps=_env("OSDN_DSCAN_GROUP_WARPS", 4), num_stages=1,
            )
    bad = None
    if _map_f16() and prec == "tf32" and GS <= 1 and BK <= 128 and NS > 0:
        # transposed maps with float16 operands, then the plain kernel for the segments they flag (none, but where a
        # float16 operand overflowed or NaN came in)
        bad = torch.zeros(NS, H, device=k.device, dtype=torch.int32)
        BR = min(_env("OSDN_DSCAN_MAP_F16_ROWS", BK), BK)
        dscan_chunk_map_f16_kernel[(NS * cdiv(BK, BR), H)](
            k, beta, alpha, eta, Md, cu_s, Phi, bad, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=alpha is not None, BR=BR,
            num_warps=_env("OSDN_DSCAN_MAP_F16_WARPS", 8 if BR >= 128 else 4), num_stages=1)
    dscan_chunk_map_kernel[(NS * cdiv(K, BN), H)](
        k, beta, alpha, eta, Md, cu_s, Phi, Zb, Sp, H=H, K=K, BK=BK, BT=C * max(GS, 1), BN=BN,
        HAS_ALPHA=alpha is not None, PREC=prec, GROUPS=GS > 1, bad=bad, FLAGGED=bad is not None, num_warps=nwm,
        num_stages=1, **_maxnreg("OSDN_DSCAN_MAP_MAXNREG"),  # A/B only: 128 was slower (run9 log, call 2)
    )
    return Phi


def dscan_chunk_forward(k, beta, alpha, eta, d_prior, d0, cu, cu_host, d_min, d_max, C, warps, PREC,
                        store_dT=True, store_dprev=False, w_dtype=torch.float32, for_backward=False):
    """C1, C2 forward on packed inputs [1, T, H, *]: prep (M_d, chunk-parallel) → serial carry → write keys
    (chunk-parallel).

    Returns
    -------
    w : [1, T, H, K]                  write keys K̃ (C2), computed in float32, stored in ``w_dtype``
    saved : dict                      Md [1, T, H, C], Dc [NT, H, K] (δ⁰ per chunk), idx, offs, segs (the
                                      two-level carry's segments or None), Phi [NS, H, K, K] (their composed
                                      maps, whose transposes the reverse carry uses; or None), clipm (int8
                                      [1, T, H, K], the clip's mask, E2, where ``for_backward`` and
                                      ``_clip_mask``; else None): what the backward needs
    dT : float32 [N, H, K] or None    d_T
    dprev : float32 [1, T, H, K] or None   d_{t-1}, when ``store_dprev``
    """
    _, T, H, K = k.shape
    N = len(cu_host) - 1
    dev, f32 = k.device, torch.float32
    BK = next_pow2(K)
    idx, offs, NT = chunk_index_tensors(cu_host, C, dev)
    ha = alpha is not None
    nw = _kernel_warps(C, BK, warps)
    Md = torch.empty(1, T, H, C, device=dev, dtype=f32)
    Dc = torch.empty(max(NT, 1), H, K, device=dev, dtype=f32)
    w = torch.empty(1, T, H, K, device=dev, dtype=w_dtype)
    dT = torch.empty(N, H, K, device=dev, dtype=f32) if store_dT else None
    dprev = torch.empty(1, T, H, K, device=dev, dtype=f32) if store_dprev else None
    if NT > 0:
        dscan_chunk_prep_kernel[(NT, H)](
            k, beta, alpha, eta, cu, idx, Md, H=H, K=K, BT=C, BKC=min(BK, 64), HAS_ALPHA=ha, PREC=PREC,
            num_warps=nw["prep"], num_stages=_env("OSDN_DSCAN_PREP_STAGES", 1),  # 2: 0.120 → 0.171 ms (run18 log)
        )
    LS = scan_segment_length(C, N * H, cu_host, w_dtype)
    segs = scan_segment_tensors(cu_host, C, LS, dev) if LS else None
    Phi = None  # the segments' composed maps (two-level carry only)
    # whether the write keys come from the carry's pass (the two-level carry's second pass)
    fused = segs is not None and _fuse_out()
    store_mask = for_backward and NT > 0 and _clip_mask()
    clipm = torch.empty(1, T, H, K, device=dev, dtype=torch.int8) if store_mask else None
    wargs = (w, dprev, clipm, float(d_min), float(d_max))
    if segs is None:
        dscan_chunk_fwd_kernel[(N, H)](
            k, beta, alpha, eta, d_prior, d0, Md, Dc, dT, cu, offs, *wargs, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_D0=d0 is not None, STORE_DT=store_dT, num_warps=nw["fwd"], num_stages=1,
        )
    else:
        # two-level carry: segment maps and offsets (the carry from 0, writing no Dc) in parallel, the segments
        # serially, then the carry of every segment from its entering deviation in parallel (writing Dc)
        cu_s, coff_s, seg_ptr, _, last, NS = segs
        Cs = torch.empty(NS, H, K, device=dev, dtype=f32)
        side = k.is_cuda and _maps_beside()
        if side:  # the maps on a second stream, beside the offsets pass, which reads the same inputs and not the maps
            main, aside = torch.cuda.current_stream(dev), _side_stream(dev)
            aside.wait_stream(main)
            with torch.cuda.stream(aside):
                Phi = _segment_maps(k, beta, alpha, eta, Md, segs, H, K, BK, C, w_dtype, LS)
        else:
            Phi = _segment_maps(k, beta, alpha, eta, Md, segs, H, K, BK, C, w_dtype, LS)
        dscan_chunk_fwd_kernel[(NS, H)](
            k, beta, alpha, eta, d_prior, None, Md, Dc, Cs, cu_s, coff_s, *wargs, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_D0=False, STORE_DT=True, DEV_IO=True, STORE_DC=False, num_warps=nw["fwd"], num_stages=1,
        )
        if side:
            main.wait_stream(aside)
            Phi.record_stream(main)  # allocated on the side stream, read (and freed, after the backward) on this one
        Xs = torch.empty(NS, H, K, device=dev, dtype=f32)
        dscan_chunk_seg_kernel[(N, H)](Phi, Cs, d0, d_prior, seg_ptr, Xs, H=H, K=K, BK=BK, HAS_X0=d0 is not None,
                                       X0_MINUS_DP=True, REVERSE=False, num_warps=nw["seg"])
        dTs = torch.empty(NS, H, K, device=dev, dtype=f32) if store_dT else None
        dscan_chunk_fwd_kernel[(NS, H)](
            k, beta, alpha, eta, d_prior, Xs, Md, Dc, dTs, cu_s, coff_s, *wargs, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_D0=True, STORE_DT=store_dT, DEV_IO=True, STORE_W=fused, STORE_DPREV=fused and store_dprev,
            STORE_MASK=fused and store_mask, PREC=PREC, PREFIX=_prefix(), num_warps=nw["fused" if fused else "fwd"],
            num_stages=1,
        )
        if store_dT:
            dT = d_prior.float()[None] + dTs.index_select(0, last)
    if NT > 0 and not fused:
        dscan_chunk_out_kernel[(NT, H)](
            k, beta, alpha, eta, d_prior, Md, Dc, w, dprev, clipm, cu, idx, float(d_min), float(d_max), H=H, K=K,
            BK=BK, BT=C, HAS_ALPHA=ha, STORE_DPREV=store_dprev, PREC=PREC, PREFIX=_prefix(), STORE_MASK=store_mask,
            num_warps=nw["out"], num_stages=1,
        )
    return w, dict(Md=Md, Dc=Dc, idx=idx, offs=offs, segs=segs, Phi=Phi, clipm=clipm, w=w), dT, dprev


def dscan_chunk_backward(k, beta, alpha, eta, d_prior, saved, dw, ddT, cu, N, d_min, d_max, C, warps, PREC,
                         dk, dbeta, dk_out=None, dbeta_out=None):
    """Reverse mode of ``dscan_chunk_forward`` (transposed C1; E1, E2, E8).

    Adds this part of ∂L/∂k and ∂L/∂β to ``dk`` [1, T, H, K] and ``dbeta`` [1, T, H] (float32, the state part's
    gradients) and writes the sums into ``dk_out`` and ``dbeta_out`` in their dtypes (rounded once; default: in place
    into ``dk`` and ``dbeta``). Returns (dalpha [1, T, H] or None, deta [N, H], ddp [N, H, K], dd0 [N, H, K]),
    float32."""
    _, T, H, K = k.shape
    dev, f32 = k.device, torch.float32
    BK = next_pow2(K)
    Md, Dc, idx, offs = (saved[n] for n in ("Md", "Dc", "idx", "offs"))
    NT = idx.shape[0]
    ha = alpha is not None
    dk_out = dk if dk_out is None else dk_out
    dbeta_out = dbeta if dbeta_out is None else dbeta_out
    G0 = torch.empty(max(NT, 1), H, K, device=dev, dtype=f32)
    S0 = torch.empty(1, T, H, device=dev, dtype=f32)
    Zc = torch.empty(max(NT, 1), H, K, device=dev, dtype=f32)
    peta = torch.empty(max(NT, 1), H, device=dev, dtype=f32)
    pdp = torch.empty(max(NT, 1), H, K, device=dev, dtype=f32) if ha else None
    dalpha = torch.empty(1, T, H, device=dev, dtype=f32) if ha else None
    deta = torch.empty(N, H, device=dev, dtype=f32)
    ddp = torch.empty(N, H, K, device=dev, dtype=f32)
    nw = _kernel_warps(C, BK, warps)
    bw = nw["bwd"]
    # where bwd_pre takes the clip's mask from (its MASK): the forward's int8 mask, the write keys for the default
    # bounds, or (None) the iterates recomputed
    if saved.get("clipm") is not None:
        mask, mask_src = 1, saved["clipm"]
    elif float(d_min) == 0.0 and float(d_max) == float("inf") and _mask_from_w():
        mask, mask_src = 2, saved["w"]
    else:
        mask, mask_src = 0, None
    if NT > 0:
        dscan_chunk_bwd_pre_kernel[(NT, H)](
            k, beta, alpha, eta, d_prior, Md, Dc, mask_src, dw, cu, idx, float(d_min), float(d_max), G0, S0, H=H,
            K=K, BK=BK, BT=C, HAS_ALPHA=ha, PREC=PREC, PREFIX=_prefix(), MASK=mask, num_warps=bw,
            num_stages=1, **_pre_maxnreg(bw),
        )
    segs = saved.get("segs")
    if segs is None:
        dd0 = torch.empty(N, H, K, device=dev, dtype=f32)
        dscan_chunk_bwd_walk_kernel[(N, H)](
            k, beta, alpha, eta, Md, G0, ddT, cu, offs, Zc, dd0, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_DDT=ddT is not None, num_warps=nw["walk"], num_stages=1,
        )
    else:
        # two-level reverse carry (see dscan_chunk_forward): offsets per segment, the segments serially from the right
        # with the transposes of the forward's maps (no maps of its own: 0.92 ms at (1, 32768, 16, 128) before), then
        # every segment's walk from its entering adjoint (writing Zc)
        cu_s, coff_s, seg_ptr, first, _, NS = segs
        Phi = saved["Phi"]
        Gs = torch.empty(NS, H, K, device=dev, dtype=f32)
        dscan_chunk_bwd_walk_kernel[(NS, H)](
            k, beta, alpha, eta, Md, G0, None, cu_s, coff_s, Zc, Gs, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_DDT=False, STORE_ZC=False, num_warps=nw["walk"], num_stages=1,
        )
        Zs = torch.empty(NS, H, K, device=dev, dtype=f32)
        dscan_chunk_seg_kernel[(N, H)](Phi, Gs, ddT, d_prior, seg_ptr, Zs, H=H, K=K, BK=BK, HAS_X0=ddT is not None,
                                       X0_MINUS_DP=False, REVERSE=True, num_warps=nw["seg"])
        dd0s = torch.empty(NS, H, K, device=dev, dtype=f32)
        dscan_chunk_bwd_walk_kernel[(NS, H)](
            k, beta, alpha, eta, Md, G0, Zs, cu_s, coff_s, Zc, dd0s, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha,
            HAS_DDT=True, num_warps=nw["walk"], num_stages=1,
        )
        dd0 = dd0s.index_select(0, first)
    if NT > 0:
        dscan_chunk_bwd_kernel[(NT, H)](
            k, beta, alpha, eta, d_prior, Md, Dc, Zc, S0, dw, cu, idx, float(d_min), float(d_max), dk, dbeta, dk_out,
            dbeta_out, dalpha, peta, pdp, H=H, K=K, BK=BK, BT=C, HAS_ALPHA=ha, PREC=PREC,
            num_warps=bw, num_stages=1,
            **_maxnreg("OSDN_DSCAN_BWD_MAXNREG"),
        )
    # blocks of chunks per step (0.131 → 0.002 ms without α at (1, 32768, 16, 128), run8 log call 7, where one chunk
    # per step walked 1024 chunks) and, with α, blocks of key columns per program
    BKS, BC, nws = _sum_config(BK, ha)
    dscan_chunk_sum_kernel[(N, H, cdiv(K, BKS))](peta, pdp, offs, deta, ddp, H=H, K=K, BK=BKS, BC=BC, HAS_ALPHA=ha,
                                                 num_warps=nws)
    return dalpha, deta, ddp, dd0
