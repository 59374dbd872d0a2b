"""The UT/WY transform of C3 with asymmetric keys: M = (I + A)^{-1} per chunk, all chunks in parallel.

A_ij = β_i e^{λ_i − λ_j} ⟨k_i, k̃_j⟩ for j < i (spec C3), read keys k and write keys K̃ from the d-scan
(C2). A is strictly lower triangular, so M is found exactly by forward substitution, row by row.
Gate ratios are taken as exp(λ_i − λ_j) of within-chunk log-gate sums, never as quotients.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _gate_cumsum(g, beta, cu_bos, t0, t1, i_h, H: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr):
    """λ (within-chunk cumulative log-gate, C3) and β for rows t0..t1-1 of a chunk, zero-padded."""
    o_t = tl.arange(0, BT)
    m_t = (t0 + o_t) < t1
    b = tl.load(beta + (t0 + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    if USE_G:
        gg = tl.load(g + (t0 + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
        lam = tl.cumsum(gg, axis=0)
    else:
        lam = tl.zeros([BT], dtype=tl.float32)
    return b, lam, m_t


@triton.jit
def wy_inverse_kernel(
    k, w, beta, g, cu, chunk_idx, M,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BKC: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """M [T, H, BT]: row t holds row (t − chunk start) of (I + A)^{-1} of its chunk (C3)."""
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n = tl.load(chunk_idx + i_c * 2)
    c = tl.load(chunk_idx + i_c * 2 + 1)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    t0 = bos + c * BT
    t1 = tl.minimum(t0 + BT, eos)
    b, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
    o_t = tl.arange(0, BT)
    kw = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BKC)):
        o_k = i_k * BKC + tl.arange(0, BKC)
        m = m_t[:, None] & (o_k[None, :] < K)
        kk = tl.load(k + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        ww = tl.load(w + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        kw += tl.dot(kk.to(DT), tl.trans(ww.to(DT)), input_precision=PREC)
    strict = o_t[:, None] > o_t[None, :]
    A = tl.where(strict, b[:, None] * kw * tl.exp(tl.where(strict, lam[:, None] - lam[None, :], 0.0)), 0.0)
    # forward substitution: M_i = e_i − Σ_{j<i} A_ij M_j
    Mi = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        a_row = tl.sum(tl.where(o_t[:, None] == i, A, 0.0), axis=0)  # [BT] over j
        new = tl.sum(a_row[:, None] * Mi, axis=0)
        Mi = tl.where(o_t[:, None] == i, Mi - new[None, :], Mi)
    tl.store(M + ((t0 + o_t[:, None]) * H + i_h) * BT + o_t[None, :], Mi, mask=m_t[:, None])
