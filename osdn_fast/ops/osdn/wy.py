"""The UT/WY transform of C3 with asymmetric keys: M = (I + A)^{-1} per chunk, all chunks in parallel.

A_ij = β_i e^{λ_i − λ_j} ⟨k_i, k̃_j⟩ for j < i (spec C3), read keys k and write keys K̃ from the d-scan
(C2). A is strictly lower triangular, so (I + A)^{-1} is unit lower triangular and exact by substitution.

``wy_inverse_blocked_kernel`` (chunks of 16, 32 or 64 rows) works on 16×16 tiles, as a blocked
forward substitution: the lower blocks A_ab (b ≤ a) come from 16-row tiles of k and K̃; each diagonal
block I + A_aa is inverted by 15 row steps (all diagonal blocks in the same steps), and the blocks below
the diagonal follow by block forward substitution, M_ab = −M_aa Σ_{b≤c<a} A_ac M_cb, as 16×16 products.
The solve itself, ``_solve_unit_lower_16``, takes any strictly lower blocks, for reuse by other
kernels. ``wy_inverse_kernel`` (row by row over the whole chunk) serves chunks of 128 rows.
Gate ratios are taken as exp(λ_i − λ_j) of within-chunk log-gate sums, never as quotients, and the
exponent is zeroed where j > i before exp.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _chunk_rows(cu, chunk_idx, i_c, BT: tl.constexpr):
    """Global chunk i_c of the packed sequences (spec §4): its sequence n, the sequence start, and the rows
    [t0, t1) it covers (the last chunk of a sequence may be short). ``chunk_idx`` [NT, 2] holds (n, c)."""
    i_n = tl.load(chunk_idx + i_c * 2)
    c = tl.load(chunk_idx + i_c * 2 + 1)
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    t0 = bos + c * BT
    return i_n, bos, t0, tl.minimum(t0 + BT, eos)


@triton.jit
def _gate_rows(g, beta, t0, t1, i_h, H: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr):
    """β and g of rows [t0, t1) in their stored dtypes (zero-padded; g zeros without a gate)."""
    o_t = tl.arange(0, BT)
    m_t = (t0 + o_t) < t1
    b = tl.load(beta + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    if USE_G:
        gg = tl.load(g + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    else:
        gg = tl.zeros([BT], dtype=tl.float32)
    return b, gg


@triton.jit
def _gate_cumsum(g, beta, cu_bos, t0, t1, i_h, H: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr):
    """λ (within-chunk cumulative log-gate, C3) and β for rows t0..t1-1 of a chunk, zero-padded."""
    o_t = tl.arange(0, BT)
    bn, gn = _gate_rows(g, beta, t0, t1, i_h, H, BT, USE_G)
    if USE_G:
        lam = tl.cumsum(gn.to(tl.float32), axis=0)
    else:
        lam = tl.zeros([BT], dtype=tl.float32)
    return bn.to(tl.float32), lam, (t0 + o_t) < t1


@triton.jit
def _unit_lower_inverse(L, BT: tl.constexpr):
    """(I + L)^{-1} of a strictly lower triangular [BT, BT] L, by forward substitution row by row
    (M_i = e_i − Σ_{j<i} L_ij M_j), exact up to rounding. Shared by ``wy_inverse_kernel`` (C3) and the
    d-scan's prep kernel (C1)."""
    o_t = tl.arange(0, BT)
    Mi = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        l_row = tl.sum(tl.where(o_t[:, None] == i, L, 0.0), axis=0)  # [BT] over j
        new = tl.sum(l_row[:, None] * Mi, axis=0)
        Mi = tl.where(o_t[:, None] == i, Mi - new[None, :], Mi)
    return Mi


@triton.jit
def wy_inverse_kernel(
    k, w, beta, g, cu, chunk_idx, M,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BKC: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """M [T, H, BT]: row t holds row (t − chunk start) of (I + A)^{-1} of its chunk (C3), row by row.

    Used for chunks of 128 rows; ``wy_inverse_blocked_kernel`` is the one for BT ≤ 64.
    """
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
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
    Mi = _unit_lower_inverse(A, BT)
    tl.store(M + ((t0 + o_t[:, None]) * H + i_h) * BT + o_t[None, :], Mi.to(M.dtype.element_ty), mask=m_t[:, None])


# ---------------------------------------------------------------------------------------------------------
# Blocked form (16×16 tiles)
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _subst_row(Mi, A, i):
    """One forward-substitution step on a [16, 16] tile: row i of M becomes e_i − Σ_{j<i} A_ij M_j.

    Rows < i of ``Mi`` must already be final and row i must still be e_i.
    """
    o = tl.arange(0, 16)
    a_row = tl.sum(tl.where(o[:, None] == i, A, 0.0), axis=0)  # A[i, :]
    new = tl.sum(a_row[:, None] * Mi, axis=0)  # Σ_j A_ij M_j
    return tl.where(o[:, None] == i, Mi - new[None, :], Mi)


@triton.jit
def _mm16(a, b):
    """[16, 16] product in float32, exact-rounding ("ieee"): the solve never uses 16-bit or tf32 operands."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _solve_unit_lower_16(A00, A10, A11, A20, A21, A22, A30, A31, A32, A33, NB: tl.constexpr):
    """Blocks of (I + L)^{-1} for a strictly lower triangular L of NB × NB tiles of 16 rows (C3).

    Parameters
    ----------
    A00 … A33 : float32 [16, 16]
        The lower blocks L_ab (b ≤ a) of L; diagonal blocks strictly lower. Blocks with a ≥ NB are
        not read (pass any [16, 16] tile, e.g. zeros).
    NB : constexpr int
        Number of 16-row tiles, 1 to 4.

    Returns
    -------
    M00, M10, M11, M20, M21, M22, M30, M31, M32, M33 : float32 [16, 16]
        The lower blocks M_ab of M = (I + L)^{-1} (the upper ones are zero); blocks with a ≥ NB are zero.
        Diagonal blocks by forward substitution (15 row steps, all NB tiles together), then
        M_ab = −M_aa Σ_{b≤c<a} L_ac M_cb for b < a, by 16×16 float32 products.
    """
    o = tl.arange(0, 16)
    eye = tl.where(o[:, None] == o[None, :], 1.0, 0.0)
    zero = tl.zeros([16, 16], dtype=tl.float32)
    M00, M11, M22, M33 = eye, eye, eye, eye
    M10, M20, M21, M30, M31, M32 = zero, zero, zero, zero, zero, zero
    for i in range(1, 16):
        M00 = _subst_row(M00, A00, i)
        if NB > 1:
            M11 = _subst_row(M11, A11, i)
        if NB > 2:
            M22 = _subst_row(M22, A22, i)
        if NB > 3:
            M33 = _subst_row(M33, A33, i)
    if NB > 1:
        M10 = -_mm16(M11, _mm16(A10, M00))
    if NB > 2:
        M20 = -_mm16(M22, _mm16(A20, M00) + _mm16(A21, M10))
        M21 = -_mm16(M22, _mm16(A21, M11))
    if NB > 3:
        M30 = -_mm16(M33, _mm16(A30, M00) + _mm16(A31, M10) + _mm16(A32, M20))
        M31 = -_mm16(M33, _mm16(A31, M11) + _mm16(A32, M21))
        M32 = -_mm16(M33, _mm16(A32, M22))
    if NB < 2:
        M11 = zero
    if NB < 3:
        M22 = zero
    if NB < 4:
        M33 = zero
    return M00, M10, M11, M20, M21, M22, M30, M31, M32, M33


@triton.jit
def _tile_gate(g, beta, t0, t1, a, i_h, H: tl.constexpr, BT: tl.constexpr, USE_G: tl.constexpr):
    """β and λ of tile a (rows t0 + 16a …, zero-padded past t1). λ is cumulated over the whole chunk (C3):
    the tile's own cumulative sum of g plus the sum of g over the chunk's earlier tiles."""
    o = t0 + 16 * a + tl.arange(0, 16)
    m = o < t1
    b = tl.load(beta + o * H + i_h, mask=m, other=0.0).to(tl.float32)
    if USE_G:
        gg = tl.load(g + o * H + i_h, mask=m, other=0.0).to(tl.float32)
        p = t0 + tl.arange(0, BT)
        g_prev = tl.load(g + p * H + i_h, mask=(p < t0 + 16 * a) & (p < t1), other=0.0).to(tl.float32)
        lam = tl.sum(g_prev, axis=0) + tl.cumsum(gg, axis=0)
    else:
        lam = tl.zeros([16], dtype=tl.float32)
    return b, lam


@triton.jit
def _tile(x, t0, t1, a, o_k, i_h, H: tl.constexpr, K: tl.constexpr, DT: tl.constexpr):
    """Rows t0 + 16a … of a [T, H, K] tensor, columns o_k, zero-padded, as the dot operand dtype DT."""
    o = t0 + 16 * a + tl.arange(0, 16)
    m = (o[:, None] < t1) & (o_k[None, :] < K)
    return tl.load(x + (o[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0).to(DT)


@triton.jit
def _gate_block(kw, b_a, lam_a, lam_b, DIAG: tl.constexpr):
    """A_ab = β_i e^{λ_i − λ_j} ⟨k_i, k̃_j⟩ on one 16×16 tile (C3); a diagonal tile is kept strictly lower,
    its exponent zeroed above the diagonal before exp (so exp never sees a masked positive argument)."""
    d = lam_a[:, None] - lam_b[None, :]
    if DIAG:
        o = tl.arange(0, 16)
        strict = o[:, None] > o[None, :]
        return tl.where(strict, b_a[:, None] * kw * tl.exp(tl.where(strict, d, 0.0)), 0.0)
    else:
        return b_a[:, None] * kw * tl.exp(d)


@triton.jit
def _store_block(M, blk, t0, t1, a, b, i_h, H: tl.constexpr, BT: tl.constexpr):
    """Store M_ab at rows t0 + 16a … (rows past t1 are not stored), columns 16b … of M [T, H, BT]."""
    o = tl.arange(0, 16)
    r = t0 + 16 * a + o
    tl.store(M + (r[:, None] * H + i_h) * BT + 16 * b + o[None, :], blk.to(M.dtype.element_ty), mask=(r < t1)[:, None])


@triton.jit
def wy_inverse_blocked_kernel(
    k, w, beta, g, cu, chunk_idx, M,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BKC: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """M [T, H, BT]: row t holds row (t − chunk start) of (I + A)^{-1} of its chunk (C3), BT ∈ {16, 32, 64}.

    One program per (chunk, head). The products ⟨k_i, k̃_j⟩ of tile pairs (b ≤ a) accumulate over
    BKC-column pieces of K (operands DT, precision PREC); gates and β make them the blocks A_ab, and
    ``_solve_unit_lower_16`` inverts. A short last chunk is zero-padded (β = 0, k = k̃ = 0), so A is
    padded with zeros and M with the identity; rows past the chunk's end are not stored.
    """
    NB: tl.constexpr = BT // 16
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    # ⟨k_i, k̃_j⟩ for the lower tile pairs (a, b), b ≤ a
    z = tl.zeros([16, 16], dtype=tl.float32)
    P00, P10, P11, P20, P21, P22, P30, P31, P32, P33 = z, z, z, z, z, z, z, z, z, z
    for i_k in range(0, tl.cdiv(K, BKC)):
        o_k = i_k * BKC + tl.arange(0, BKC)
        w0 = tl.trans(_tile(w, t0, t1, 0, o_k, i_h, H, K, DT))
        P00 += tl.dot(_tile(k, t0, t1, 0, o_k, i_h, H, K, DT), w0, input_precision=PREC)
        if NB > 1:
            k1 = _tile(k, t0, t1, 1, o_k, i_h, H, K, DT)
            w1 = tl.trans(_tile(w, t0, t1, 1, o_k, i_h, H, K, DT))
            P10 += tl.dot(k1, w0, input_precision=PREC)
            P11 += tl.dot(k1, w1, input_precision=PREC)
        if NB > 2:
            k2 = _tile(k, t0, t1, 2, o_k, i_h, H, K, DT)
            w2 = tl.trans(_tile(w, t0, t1, 2, o_k, i_h, H, K, DT))
            P20 += tl.dot(k2, w0, input_precision=PREC)
            P21 += tl.dot(k2, w1, input_precision=PREC)
            P22 += tl.dot(k2, w2, input_precision=PREC)
        if NB > 3:
            k3 = _tile(k, t0, t1, 3, o_k, i_h, H, K, DT)
            w3 = tl.trans(_tile(w, t0, t1, 3, o_k, i_h, H, K, DT))
            P30 += tl.dot(k3, w0, input_precision=PREC)
            P31 += tl.dot(k3, w1, input_precision=PREC)
            P32 += tl.dot(k3, w2, input_precision=PREC)
            P33 += tl.dot(k3, w3, input_precision=PREC)
    # β and λ per tile (tiles ≥ NB are all padding: β = 0, and their blocks are not read)
    b0, l0 = _tile_gate(g, beta, t0, t1, 0, i_h, H, BT, USE_G)
    b1, l1 = _tile_gate(g, beta, t0, t1, 1, i_h, H, BT, USE_G)
    b2, l2 = _tile_gate(g, beta, t0, t1, 2, i_h, H, BT, USE_G)
    b3, l3 = _tile_gate(g, beta, t0, t1, 3, i_h, H, BT, USE_G)
    M00, M10, M11, M20, M21, M22, M30, M31, M32, M33 = _solve_unit_lower_16(
        _gate_block(P00, b0, l0, l0, True),
        _gate_block(P10, b1, l1, l0, False), _gate_block(P11, b1, l1, l1, True),
        _gate_block(P20, b2, l2, l0, False), _gate_block(P21, b2, l2, l1, False), _gate_block(P22, b2, l2, l2, True),
        _gate_block(P30, b3, l3, l0, False), _gate_block(P31, b3, l3, l1, False), _gate_block(P32, b3, l3, l2, False),
        _gate_block(P33, b3, l3, l3, True), NB)
    _store_block(M, M00, t0, t1, 0, 0, i_h, H, BT)
    if NB > 1:
        _store_block(M, M10, t0, t1, 1, 0, i_h, H, BT)
        _store_block(M, M11, t0, t1, 1, 1, i_h, H, BT)
    if NB > 2:
        _store_block(M, M20, t0, t1, 2, 0, i_h, H, BT)
        _store_block(M, M21, t0, t1, 2, 1, i_h, H, BT)
        _store_block(M, M22, t0, t1, 2, 2, i_h, H, BT)
    if NB > 3:
        _store_block(M, M30, t0, t1, 3, 0, i_h, H, BT)
        _store_block(M, M31, t0, t1, 3, 1, i_h, H, BT)
        _store_block(M, M32, t0, t1, 3, 2, i_h, H, BT)
        _store_block(M, M33, t0, t1, 3, 3, i_h, H, BT)
    for a in tl.static_range(NB):  # upper blocks
        for b in tl.static_range(a + 1, NB):
            _store_block(M, z, t0, t1, a, b, i_h, H, BT)
