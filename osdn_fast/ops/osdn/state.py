"""The state part of the chunkwise form (spec C3) and its reverse-mode derivative.

Forward (``state_fwd_kernel``): one program per (value block, sequence, head) walks the chunks of its
sequence in order and keeps its [K, BV] slice of h = Sᵀ in float32 registers, storing each chunk-start state
(hbuf). Value columns are independent given the write keys, so the V split needs no communication.

Per chunk (n rows, λ within-chunk cumulative log-gate, e = e^λ, M = (I + A)^{-1} from :mod:`wy`)::

    R = diag(β)(V − diag(e) K h⁰),  U = M R
    O = scale (diag(e) Q h⁰ + tril(e^{λ_i−λ_j} Q K̃ᵀ) U)
    h_end = e^{λ_n} h⁰ + (diag(e^{λ_n − λ}) K̃)ᵀ U

Backward, split (the default in :mod:`chunk`): only the state adjoint dh is serial.
``state_bwd_dh_kernel`` walks the chunks in reverse per (value block, sequence, head) with just the
products on the dh path::

    dR = Mᵀ (scale Sᵀ dO + diag(e^{λn−λ}) K̃ dh),  dV = diag(β) dR,
    dh ← e^{λ_n} dh + scale (diag(e) Q)ᵀ dO − (diag(βe) K)ᵀ dR

storing each chunk's dh (the adjoint of its end state) in dhbuf [NT, H, K, V], as large as hbuf (both in the
16-bit input dtype for 16-bit inputs: every use but the gated Σ h ⊙ dh rounds them to that dtype for a dot anyway).
``state_bwd_grads_kernel`` then runs one program per (chunk, head), all in parallel: from h (hbuf) and
dh (dhbuf) it recomputes U and dR per value block and forms dQ, dK, dK̃, dβ, dg, summing over the value
blocks inside the program (no atomics). Both share the per-chunk tiles ``_bwd_chunk_tiles``, the
intra-chunk matrix ``_intra_qk`` and the dR step ``_dr_of_chunk``.

Tiled dh walk (``state_bwd_dh_tiles_kernel``, the default for few (sequence, head) pairs, see chunk.py):
``state_bwd_dul_kernel`` forms Mᵀ scale Sᵀ dO and P = Mᵀ diag(e^{λn−λ}) K̃ for all chunks at once, so the walk's step
is dR = Mᵀ scale Sᵀ dO + P dh: three products per chunk instead of six, two instead of three on the chain from one
chunk's dh to the next, with dh held as key tiles of <= 64 rows.

Two-product forward walk (``state_fwd_wu_kernel``, the default for fewer than 64 (sequence, head) pairs, see chunk.py):
``state_wu_kernel`` forms W = M diag(βe^λ) K and u = M diag(β) V for all chunks at once, so the walk's step is
U = u − W h⁰ and h_end = e^{λ_n} h⁰ + (diag(e^{λ_n − λ}) K̃)ᵀ U (two products, both on the chain; fla's ``fwd_h`` form);
it stores U, from which ``state_out_kernel`` forms O and the stored gradient kernel reads U (``FROM_U``).

Two-level walks (the two-product forward walk and the tiled dh walk, for few long sequences, see
``chunk.walk_segment_length``): a chunk maps its entering state affinely, h_end = (e^{λ_n} I − K̃_dᵀ W) h⁰ + K̃_dᵀ u,
so a segment of chunks does too, h_end = Φ_s h_start + b_s. The walk kernels' MAPS pass walks every segment in parallel
from 0 on the value columns (b_s) and from the identity on K more columns without inputs (Φ_s, K×K);
``state_seg_carry_kernel`` chains the segments, and a plain pass walks every segment again from its start state.

Lean forward walk (``OSDN_STATE_WALK=lean``, an A/B switch): the forward walk keeps only K h⁰, U = M R and the state
update and stores U; ``state_out_kernel`` forms O for all chunks at once from hbuf and U.

Backward, fused (``state_bwd_kernel``, ``OSDN_STATE_BWD=fused``): one serial walk that also computes
every intra-chunk gradient, the value blocks adding their parts of the sums over V with float32 atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .wy import _chunk_rows, _gate_cumsum, _gate_rows


@triton.jit
def _load2(ptr, t0, o_t, m_t, i_h, H: tl.constexpr, D: tl.constexpr, o_d, m_d):
    return tl.load(ptr + ((t0 + o_t[:, None]) * H + i_h) * D + o_d[None, :],
                   mask=m_t[:, None] & m_d[None, :], other=0.0)


@triton.jit
def _walk_program(cu, H: tl.constexpr, V: tl.constexpr, BV: tl.constexpr):
    """Program ids of a serial walk (grid (value blocks, N·H)): i_nh, the sequence i_n and head i_h, the sequence
    bounds [bos, eos) and the value block's offsets and mask."""
    i_v = tl.program_id(0)
    i_nh = tl.program_id(1)
    i_n = i_nh // H
    i_h = i_nh % H
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    o_v = i_v * BV + tl.arange(0, BV)
    return i_nh, i_n, i_h, bos, eos, o_v, o_v < V


@triton.jit
def _state_block(cu, init, HAS_INIT: tl.constexpr, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                 BK: tl.constexpr, BV: tl.constexpr):
    """Prologue of the serial kernels (grid (value blocks, N·H)): the program's sequence i_n and head i_h, the
    sequence bounds [bos, eos), key/value offsets and masks, the offsets ``hk`` and mask ``m_h`` of its
    [BK, BV] slice of a [K, V] state, and that slice of ``init`` [N, H, K, V] in float32 (zeros without it)."""
    i_nh, i_n, i_h, bos, eos, o_v, m_v = _walk_program(cu, H, V, BV)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    hk = o_k[:, None] * V + o_v[None, :]
    m_h = m_k[:, None] & m_v[None, :]
    if HAS_INIT:
        x = tl.load(init + (i_n * H + i_h) * K * V + hk, mask=m_h, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BK, BV], dtype=tl.float32)
    return i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, x


@triton.jit
def _rows(ptr, t0, t1, i_h, H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, o_d, m_d):
    """Rows [t0, t1) of a [T, H, D] tensor, columns o_d, as a [BT, len(o_d)] tile in its stored dtype (zero
    elsewhere; nothing is read where t1 <= t0)."""
    o_t = tl.arange(0, BT)
    return _load2(ptr, t0, o_t, (t0 + o_t) < t1, i_h, H, D, o_d, m_d)


@triton.jit
def state_fwd_kernel(
    q, k, v, w, beta, g, M, h0, o, hbuf, hT, vrbuf, ubuf, cu, chunk_off, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_H: tl.constexpr, STORE_HT: tl.constexpr,
    STORE_VR: tl.constexpr, LEAN: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """o [T, H, V] (E6 via C3); hbuf [NT, H, K, V] chunk-start states (float32, or the 16-bit input dtype; see
    chunk.py); hT [N, H, K, V]; when STORE_VR, vrbuf [T, H, V] = V − diag(e^λ) K h⁰ (the residual of C3 before
    diag(β) and M, in vrbuf's dtype) for ``state_bwd_grads_stored_kernel``.

    LEAN (``OSDN_STATE_WALK=lean``): the walk does only what the next chunk needs (K h⁰, U = M R, the state update:
    three dots instead of six) and stores U in ubuf [T, H, V] (in DT, the rounding the output's dot applies to it);
    ``state_out_kernel`` then forms o for all chunks at once from hbuf and ubuf.

    Loading the next chunk's operands before this chunk's arithmetic (in registers, as the d-scan carries do) was
    measured 2.5x slower on an H200 (register spills; reports/gpu-run-run6-NVIDIA-H200-H100.log, call 2)."""
    i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, h = _state_block(cu, h0, HAS_H0, H, K, V, BK, BV)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    for c in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        if STORE_H:
            tl.store(hbuf + ((c_off + c) * H + i_h) * K * V + hk, h.to(hbuf.dtype.element_ty), mask=m_h)
        # every load first, then the arithmetic (faster than loading at first use: state_fwd 2.50 → 2.25 ms at
        # (1, 32768, 16, 128), H200, calls 1 and 2 of reports/gpu-run-run6-NVIDIA-H200-H100.log: two machines)
        qn, kn, wn, mn, bn, gn = _chunk_loads(q, k, w, beta, g, M, t0, t1, i_h, H, K, BT, BK, USE_G)
        vn = _rows(v, t0, t1, i_h, H, V, BT, o_v, m_v)
        b, lam, m_t, qq, kk, ww, mm, lam_n, e, en_e, wd = _chunk_tiles_of(qn, kn, wn, mn, bn, gn, t0, t1, BT, USE_G, DT)
        vv = vn.to(tl.float32)
        hd = h.to(DT)
        kh = tl.dot(kk, hd, input_precision=PREC)
        vr = vv - e[:, None] * kh
        if STORE_VR:
            tl.store(vrbuf + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], vr.to(vrbuf.dtype.element_ty),
                     mask=m_t[:, None] & m_v[None, :])
        r = b[:, None] * vr
        u = tl.dot(mm, r.to(DT), input_precision=PREC)
        if LEAN:
            tl.store(ubuf + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], u.to(DT),
                     mask=m_t[:, None] & m_v[None, :])
        else:
            oo = _chunk_out(qq, _intra_qk(qq, ww, lam, BT, USE_G, PREC), hd, u.to(DT), lam, scale, USE_G, DT, PREC)
            tl.store(o + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], oo.to(o.dtype.element_ty),
                     mask=m_t[:, None] & m_v[None, :])
        if USE_G:
            h = tl.exp(lam_n) * h + tl.dot(tl.trans(wd), u.to(DT), input_precision=PREC)
        else:
            h = h + tl.dot(tl.trans(wd), u.to(DT), input_precision=PREC)
    if STORE_HT:
        tl.store(hT + (i_n * H + i_h) * K * V + hk, h, mask=m_h)


@triton.jit
def _chunk_value_block(cu, chunk_idx, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr):
    """Program ids of a chunk-parallel kernel on grid (NT · value blocks, H), the value block varying fastest (a chunk's
    programs then share its reads through L2): chunk i_c, value block i_v, head i_h, the chunk's sequence start and rows
    [t0, t1), and the value block's offsets and mask."""
    NV: tl.constexpr = (V + BV - 1) // BV
    i_c = tl.program_id(0) // NV
    i_v = tl.program_id(0) % NV
    i_h = tl.program_id(1)
    _, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    return i_c, i_v, i_h, bos, t0, t1, o_v, o_v < V


@triton.jit
def state_wu_kernel(
    k, v, beta, g, M, wk, u, cu, chunk_idx,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """The h⁰-independent factors of U (C3) for every chunk at once, for the two-product walk
    (``state_fwd_wu_kernel``): U = M diag(β)(V − diag(e^λ) K h⁰) = u − W h⁰ with

    - u [T, H, V] = M diag(β) V, in u's dtype (the walk overwrites it with U);
    - wk [T, H, K] = W = M diag(β e^λ) K, in wk's dtype (first value block only).

    Grid (NT · value blocks, H), the value block fastest so that a chunk's programs share M through L2."""
    i_c, i_v, i_h, bos, t0, t1, o_v, m_v = _chunk_value_block(cu, chunk_idx, V, BT, BV)
    o_t = tl.arange(0, BT)
    b, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
    mm = _load2(M, t0, o_t, m_t, i_h, H, BT, o_t, o_t < BT).to(DT)
    vv = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
    uu = tl.dot(mm, (b[:, None] * vv).to(DT), input_precision=PREC)
    tl.store(u + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], uu.to(u.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])
    if i_v == 0:
        # (loading K before the store instead, with V, measured no faster: 0.166 → 0.172 ms at (1, 32768, 16, 128),
        # bf16, H200; reports/gpu-run-run16-NVIDIA-H200.log, call 7)
        o_k = tl.arange(0, BK)
        m_k = o_k < K
        kk = _load2(k, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(tl.float32)
        if USE_G:
            be = b * tl.exp(lam)
        else:
            be = b
        ww = tl.dot(mm, (be[:, None] * kk).to(DT), input_precision=PREC)
        tl.store(wk + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :], ww.to(wk.dtype.element_ty),
                 mask=m_t[:, None] & m_k[None, :])


@triton.jit
def _map_columns(o_k, o_v, m_v, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr):
    """Columns of a program of a segment pass (MAPS) of the two-level walks (grid (value blocks + key blocks, NS·H)):
    program ids past the value blocks take key columns of the segment's composed map Φ (the walk of the homogeneous
    recurrence from the identity). Returns (is_map, its columns and their mask, the mask of the columns that read the
    walk's inputs (none for a map block), and the [len(o_k), BV] start tile: the identity's columns or zeros)."""
    NV: tl.constexpr = (V + BV - 1) // BV
    is_map = tl.program_id(0) >= NV
    # as vectors: the interpreter refuses masks of a scalar combined with a vector
    maps_v = (tl.program_id(0) + 0 * o_v) >= NV
    o_c = tl.where(maps_v, (tl.program_id(0) - NV) * BV + tl.arange(0, BV), o_v)
    m_c = tl.where(maps_v, o_c < K, m_v)
    x0 = tl.where(maps_v[None, :] & (o_k[:, None] == o_c[None, :]), 1.0, 0.0)
    return is_map, o_c, m_c, m_v & (maps_v == 0), x0


@triton.jit
def _segment_end_store(offs_b, maps, x, i_nh, o_k, m_k, o_c, m_c, is_map, K: tl.constexpr, V: tl.constexpr):
    """Store a segment pass's end tile [len(o_k), BV] (float32): a map block's into ``maps`` [NS·H, K, K], a value
    block's into ``offs_b`` [NS·H, K, V]."""
    m = m_k[:, None] & m_c[None, :]
    if is_map:
        tl.store(maps + i_nh.to(tl.int64) * K * K + o_k[:, None] * K + o_c[None, :], x, mask=m)
    else:
        tl.store(offs_b + i_nh.to(tl.int64) * K * V + o_k[:, None] * V + o_c[None, :], x, mask=m)


@triton.jit
def state_fwd_wu_kernel(
    wk, w, u, g, h0, hbuf, hT, maps, cu, chunk_off,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, MAPS: tl.constexpr, DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """The two-product state walk (``OSDN_STATE_WALK=wu``), C3 with the h⁰-independent factors formed beforehand by
    ``state_wu_kernel``: per chunk, in order::

        U = u − W h⁰                                   (= M diag(β)(V − diag(e^λ) K h⁰))
        h_end = e^{λ_n} h⁰ + (diag(e^{λ_n − λ}) K̃)ᵀ U

    two products, both on the chain from one chunk's state to the next. Stores every chunk-start state (hbuf) and U
    over u; ``state_out_kernel`` forms the output for all chunks at once from them. hT [N, H, K, V] float32.

    Two-level walk (``chunk.walk_segment_length``): ``cu``, ``chunk_off`` are then segments of a sequence's chunks
    and a program walks one segment. With MAPS (the segment pass) it stores nothing per chunk; value blocks walk from
    h⁰ = 0 and store the segment's offset b_s (its end state) into hT [NS, H, K, V], key blocks walk the identity's
    columns with u = 0 and store the composed map Φ_s = Π (e^{λn} I − K̃_dᵀ W), K̃_d = diag(e^{λn−λ}) K̃, into ``maps``
    [NS, H, K, K], so that h_end = Φ_s h_start + b_s; ``state_seg_carry_kernel`` chains the segments and a plain
    pass from each segment's start state (h0 [NS, H, K, V]) stores hbuf and U."""
    i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, h = _state_block(cu, h0, HAS_H0, H, K, V, BK, BV)
    m_u = m_v
    if MAPS:
        is_map, o_c, m_c, m_u, h = _map_columns(o_k, o_v, m_v, K, V, BV)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    for c in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        m_t = (t0 + o_t) < t1
        if not MAPS:
            tl.store(hbuf + ((c_off + c) * H + i_h) * K * V + hk, h.to(hbuf.dtype.element_ty), mask=m_h)
        wn = _rows(wk, t0, t1, i_h, H, K, BT, o_k, m_k)
        kn = _rows(w, t0, t1, i_h, H, K, BT, o_k, m_k)
        un = _rows(u, t0, t1, i_h, H, V, BT, o_v, m_u)
        if USE_G:
            gn = tl.load(g + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
        uu = un.to(tl.float32) - tl.dot(wn.to(DT), h.to(DT), input_precision=PREC)
        if not MAPS:
            tl.store(u + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], uu.to(u.dtype.element_ty),
                     mask=m_t[:, None] & m_v[None, :])
        if USE_G:
            lam = tl.cumsum(gn.to(tl.float32), axis=0)
            lam_n = tl.sum(tl.where(o_t == (t1 - t0 - 1), lam, 0.0), axis=0)
            kd = (kn.to(tl.float32) * tl.where(m_t, tl.exp(lam_n - lam), 0.0)[:, None]).to(DT)
            h = tl.exp(lam_n) * h + tl.dot(tl.trans(kd), uu.to(DT), input_precision=PREC)
        else:
            h = h + tl.dot(tl.trans(kn.to(DT)), uu.to(DT), input_precision=PREC)
    if MAPS:
        _segment_end_store(hT, maps, h, i_n * H + i_h, o_k, m_k, o_c, m_c, is_map, K, V)
    elif STORE_HT:
        tl.store(hT + (i_n * H + i_h) * K * V + hk, h, mask=m_h)


@triton.jit
def state_seg_carry_kernel(
    maps, offs_b, x0, seg_ptr, Xs, xT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_X0: tl.constexpr, STORE_XT: tl.constexpr, REVERSE: tl.constexpr, MAPS_T: tl.constexpr, PREC: tl.constexpr,
):
    """The serial level of the two-level walks (C3); grid (value blocks, N·H): walks sequence i_n's segments in
    order (the forward state) or with REVERSE from the last (the state adjoint dh), x ← Φ_s x + b_s with every
    segment's composed map Φ_s (``maps`` [NS, H, K, K]) and offset b_s (``offs_b`` [NS, H, K, V], the segment's walk
    from 0), starting from x0 [N, H, K, V] (h0, or the cotangent of the final state) or 0. Writes Xs [NS, H, K, V]
    (float32): the x entering every segment, and with STORE_XT the x leaving the sequence into xT [N, H, K, V].

    With MAPS_T the maps are applied transposed, x ← Φ_sᵀ x + b_s (the dh walk's level on the forward walk's maps).
    The program then carries xᵀ [BV, K], xᵀ ← xᵀ Φ_s + b_sᵀ, so that the map stays the product's right operand in
    its stored layout: with Φ_sᵀ as the left operand (strided loads or ``tl.trans``) that level took 0.020 → 0.038 ms
    at (1, 32768, 16, 128) (H200, run14 log, calls 1 and 2)."""
    i_v = tl.program_id(0)
    i_nh = tl.program_id(1)
    i_n = i_nh // H
    i_h = i_nh % H
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    if MAPS_T:
        # element (k, v) of a [K, V] tensor at [v, k] of the tile
        xk = o_k[None, :] * V + o_v[:, None]
        m_x = (o_v < V)[:, None] & m_k[None, :]
    else:
        xk = o_k[:, None] * V + o_v[None, :]
        m_x = m_k[:, None] & (o_v < V)[None, :]
    if HAS_X0:
        x = tl.load(x0 + i_nh.to(tl.int64) * K * V + xk, mask=m_x, other=0.0).to(tl.float32)
    elif MAPS_T:
        x = tl.zeros([BV, BK], dtype=tl.float32)
    else:
        x = tl.zeros([BK, BV], dtype=tl.float32)
    s0 = tl.load(seg_ptr + i_n)
    s1 = tl.load(seg_ptr + i_n + 1)
    for ss in range(0, s1 - s0):
        if REVERSE:
            s = (s1 - 1 - ss).to(tl.int64)
        else:
            s = (s0 + ss).to(tl.int64)
        tl.store(Xs + (s * H + i_h) * K * V + xk, x, mask=m_x)
        ph = tl.load(maps + (s * H + i_h) * K * K + o_k[:, None] * K + o_k[None, :],
                     mask=m_k[:, None] & m_k[None, :], other=0.0)
        b = tl.load(offs_b + (s * H + i_h) * K * V + xk, mask=m_x, other=0.0)
        if MAPS_T:
            x = tl.dot(x, ph, input_precision=PREC) + b  # (Φᵀ x)ᵀ = xᵀ Φ
        else:
            x = tl.dot(ph, x, input_precision=PREC) + b
    if STORE_XT:
        tl.store(xT + i_nh.to(tl.int64) * K * V + xk, x, mask=m_x)


@triton.jit
def _chunk_out(qq, S, hd, ud, lam, scale, USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """O = scale (diag(e^λ) Q h⁰ + S U) of one chunk (C3, E6), float32, from Q, h⁰, U in DT and
    S = tril(e^{λ_i−λ_j} Q K̃ᵀ) (``_intra_qk``). Shared by the full walk and ``state_out_kernel``."""
    if USE_G:
        oo = tl.exp(lam)[:, None] * tl.dot(qq, hd, input_precision=PREC)
    else:
        oo = tl.dot(qq, hd, input_precision=PREC)
    return scale * (oo + tl.dot(S.to(DT), ud, input_precision=PREC))


@triton.jit
def _qw_rows(q, w, beta, g, cu, chunk_idx, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
             BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, DT: tl.constexpr):
    """Prologue of the lean walk's chunk-parallel kernels (grid (NT · value blocks, H), the value block varying
    fastest so that a chunk's programs share its Q, K̃ reads through L2): the chunk's rows, key and value offsets and
    masks, λ (``_gate_cumsum``), Q and K̃ in DT, and the value block; S = tril(e^{λ_i−λ_j} Q K̃ᵀ) is ``_intra_qk``'s."""
    i_c, i_v, i_h, bos, t0, t1, o_v, m_v = _chunk_value_block(cu, chunk_idx, V, BT, BV)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    _, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
    qq = _load2(q, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
    ww = _load2(w, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
    return i_c, i_h, i_v, t0, o_t, m_t, o_k, m_k, o_v, m_v, lam, qq, ww


@triton.jit
def _dul_loads(do, M, t0, o_t, m_t, i_h, H: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, o_v, m_v,
               DT: tl.constexpr):
    """dO [BT, BV] and M [BT, BT] of one chunk in DT (``state_bwd_dul_kernel``)."""
    return (_load2(do, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT),
            _load2(M, t0, o_t, m_t, i_h, H, BT, o_t, o_t < BT).to(DT))


@triton.jit
def _out_loads(hbuf, ubuf, i_c, t0, o_t, m_t, i_h, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, o_k, m_k,
               o_v, m_v, DT: tl.constexpr):
    """U [BT, BV] and the chunk-start state h⁰ [BK, BV] of one chunk in DT (``state_out_kernel``)."""
    return (_load2(ubuf, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT),
            tl.load(hbuf + (i_c.to(tl.int64) * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :],
                    mask=m_k[:, None] & m_v[None, :], other=0.0).to(DT))


@triton.jit
def state_bwd_dul_kernel(
    q, w, beta, g, M, do, dul, pbuf, cu, chunk_idx, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr, LOADS_FIRST: tl.constexpr = False,
):
    """The dh-independent parts of dR = Mᵀ dU, dU = scale Sᵀ dO + diag(e^{λn−λ}) K̃ dh (C3 reversed), for every chunk
    at once, for the tiled dh walk; grid (NT · value blocks, H) (``_qw_rows``):

    - dul [T, H, V] = Mᵀ (scale Sᵀ dO), in dul's dtype; ``state_bwd_dh_tiles_kernel`` reads it and overwrites it
      with dR;
    - pbuf [T, H, K] = P = Mᵀ diag(e^{λn−λ}) K̃ (first value block only), in pbuf's dtype,

    so that the walk's step is dR = dul + P dh and dh ← e^{λn} dh + scale (diag(e^λ) Q)ᵀ dO − (diag(β e^λ) K)ᵀ dR:
    two products on the chain from one chunk's dh to the next instead of three.

    LOADS_FIRST (env OSDN_DUL_LOADS_FIRST, on by default) issues dO and M with Q and K̃, before S's product: the same
    registers offline (142, no stack; Triton 3.6, bf16), bit-identical results; same-run A/B on an H100 80GB HBM3,
    bf16, (1, 32768, 16, 128) (reports/gpu-run-run18-NVIDIA-H100-80GB-HBM3.log): this kernel 0.280 → 0.269 ms (one
    run; fwd+bwd 5.637 → 5.556, most of which is run-to-run spread: every other kernel moved by up to 0.01 too)."""
    i_c, i_h, i_v, t0, o_t, m_t, o_k, m_k, o_v, m_v, lam, qq, ww = _qw_rows(
        q, w, beta, g, cu, chunk_idx, H, K, V, BT, BK, BV, USE_G, DT)
    if LOADS_FIRST:  # dO and M issued with Q, K̃, before S's product
        ddo, mm = _dul_loads(do, M, t0, o_t, m_t, i_h, H, V, BT, o_v, m_v, DT)
    S = _intra_qk(qq, ww, lam, BT, USE_G, PREC)
    if not LOADS_FIRST:
        ddo, mm = _dul_loads(do, M, t0, o_t, m_t, i_h, H, V, BT, o_v, m_v, DT)
    x = scale * tl.dot(tl.trans(S.to(DT)), ddo, input_precision=PREC)
    x = tl.dot(tl.trans(mm), x.to(DT), input_precision=PREC)
    tl.store(dul + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], x.to(dul.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])
    if i_v == 0:
        if USE_G:
            # padded rows carry λ_n (the gates are zero-padded before the cumulative sum)
            lam_n = tl.sum(tl.where(o_t == BT - 1, lam, 0.0), axis=0)
            wd = (ww.to(tl.float32) * tl.where(m_t, tl.exp(lam_n - lam), 0.0)[:, None]).to(DT)
        else:
            wd = ww
        p = tl.dot(tl.trans(mm), wd, input_precision=PREC)
        tl.store(pbuf + ((t0 + o_t[:, None]) * H + i_h) * K + o_k[None, :], p.to(pbuf.dtype.element_ty),
                 mask=m_t[:, None] & m_k[None, :])


@triton.jit
def state_out_kernel(
    q, w, beta, g, hbuf, ubuf, o, cu, chunk_idx, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr, LOADS_FIRST: tl.constexpr = False,
):
    """The output of C3 for every chunk at once (``OSDN_STATE_WALK=lean``): O = scale (diag(e^λ) Q h⁰ +
    tril(e^{λ_i−λ_j} Q K̃ᵀ) U) from the chunk-start state h⁰ (hbuf) and U (ubuf, in DT) of the lean state walk;
    grid (NT · value blocks, H) (``_qw_rows``). The same products, in the same order, as the full walk's output.

    LOADS_FIRST (env OSDN_OUT_LOADS_FIRST, off) issues U and h⁰ with Q and K̃, before S's product: 92 registers
    offline instead of 106 (no stack; Triton 3.6, bf16), but slower: same-run A/B on an H100 80GB HBM3, bf16,
    (1, 32768, 16, 128) (reports/gpu-run-run18-NVIDIA-H100-80GB-HBM3.log), this kernel 0.277 → 0.311 ms."""
    i_c, i_h, i_v, t0, o_t, m_t, o_k, m_k, o_v, m_v, lam, qq, ww = _qw_rows(
        q, w, beta, g, cu, chunk_idx, H, K, V, BT, BK, BV, USE_G, DT)
    if LOADS_FIRST:  # U and h⁰ issued with Q, K̃, before S's product
        uu, hd = _out_loads(hbuf, ubuf, i_c, t0, o_t, m_t, i_h, H, K, V, o_k, m_k, o_v, m_v, DT)
    S = _intra_qk(qq, ww, lam, BT, USE_G, PREC)
    if not LOADS_FIRST:
        uu, hd = _out_loads(hbuf, ubuf, i_c, t0, o_t, m_t, i_h, H, K, V, o_k, m_k, o_v, m_v, DT)
    oo = _chunk_out(qq, S, hd, uu, lam, scale, USE_G, DT, PREC)
    tl.store(o + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], oo.to(o.dtype.element_ty),
             mask=m_t[:, None] & m_v[None, :])


@triton.jit
def state_bwd_kernel(
    q, k, v, w, beta, g, M, hbuf, do, dhT, cu, chunk_off, scale,
    dq, dk, dw, dv, dbeta, dg, dh0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_DHT: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr, ATOMIC: tl.constexpr,
):
    """Reverse pass of C3, chunks in reverse order, U recomputed from the stored chunk-start states.

    Writes dv [T, H, V] and dh0 [N, H, K, V] (complete), and adds each value block's part of
    dq, dk, dw [T, H, K], dbeta, dg [T, H] (dg already reverse-cumulated within chunks) into zeroed float32
    buffers (ATOMIC, several value blocks) or stores it (one value block).
    """
    i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, dh = _state_block(cu, dhT, HAS_DHT, H, K, V, BK, BV)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    strict = o_t[:, None] > o_t[None, :]
    NC = tl.cdiv(eos - bos, BT)
    for cc in range(0, NC):
        c = NC - 1 - cc
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        h = tl.load(hbuf + ((c_off + c) * H + i_h) * K * V + hk, mask=m_h, other=0.0).to(tl.float32)
        b, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
        qq = _load2(q, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        kk = _load2(k, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        ww = _load2(w, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        vv = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
        mm = _load2(M, t0, o_t, m_t, i_h, H, BT, o_t, o_t < BT).to(DT)
        ddo = _load2(do, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT)
        hd = h.to(DT)
        if USE_G:
            last = t1 - t0 - 1
            lam_n = tl.sum(tl.where(o_t == last, lam, 0.0), axis=0)
            e = tl.exp(lam)
            en_e = tl.where(m_t, tl.exp(lam_n - lam), 0.0)
            gam = tl.exp(tl.where(incl, lam[:, None] - lam[None, :], 0.0))
        # recompute the forward quantities of the chunk
        kh = tl.dot(kk, hd, input_precision=PREC)
        if USE_G:
            vr = vv - e[:, None] * kh
        else:
            vr = vv - kh
        r = b[:, None] * vr
        u = tl.dot(mm, r.to(DT), input_precision=PREC)
        ud = u.to(DT)
        qw = tl.dot(qq, tl.trans(ww), input_precision=PREC)
        kw = tl.dot(kk, tl.trans(ww), input_precision=PREC)
        if USE_G:
            S = tl.where(incl, qw * gam, 0.0)
            Araw = tl.where(strict, kw * gam, 0.0)
            wd = (ww.to(tl.float32) * en_e[:, None]).to(DT)
        else:
            S = tl.where(incl, qw, 0.0)
            Araw = tl.where(strict, kw, 0.0)
            wd = ww
        # dU = scale Sᵀ dO + diag(e^{λn−λ}) K̃ dh
        du = scale * tl.dot(tl.trans(S.to(DT)), ddo, input_precision=PREC) + tl.dot(wd, dh.to(DT), input_precision=PREC)
        dr = tl.dot(tl.trans(mm), du.to(DT), input_precision=PREC)
        drd = dr.to(DT)
        tl.store(dv + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], (b[:, None] * dr).to(dv.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])
        dS = tl.where(incl, scale * tl.dot(ddo, tl.trans(ud), input_precision=PREC), 0.0)
        dA = tl.where(strict, -tl.dot(drd, tl.trans(ud), input_precision=PREC), 0.0)
        if USE_G:
            gqw = dS * gam
            gkw = b[:, None] * dA * gam
        else:
            gqw = dS
            gkw = b[:, None] * dA
        gqw_d = gqw.to(DT)
        gkw_d = gkw.to(DT)
        # dq = G_qw K̃ + scale diag(e) dO h⁰ᵀ
        dq_c = tl.dot(gqw_d, ww, input_precision=PREC)
        dohT = tl.dot(ddo, tl.trans(hd), input_precision=PREC)
        drhT = tl.dot(drd, tl.trans(hd), input_precision=PREC)
        udh = tl.dot(ud, tl.trans(dh.to(DT)), input_precision=PREC)  # [BT, BK]
        if USE_G:
            dq_c += scale * e[:, None] * dohT
            dk_c = tl.dot(gkw_d, ww, input_precision=PREC) - (b * e)[:, None] * drhT
            dw_c = en_e[:, None] * udh
        else:
            dq_c += scale * dohT
            dk_c = tl.dot(gkw_d, ww, input_precision=PREC) - b[:, None] * drhT
            dw_c = udh
        dw_c += tl.dot(tl.trans(gqw_d), qq, input_precision=PREC) + tl.dot(tl.trans(gkw_d), kk, input_precision=PREC)
        db_c = tl.sum(dr * vr, axis=1) + tl.sum(dA * Araw, axis=1)
        rows = (t0 + o_t) * H + i_h
        m_tk = m_t[:, None] & m_k[None, :]
        if ATOMIC:  # value blocks add their partial sums into one zero-initialised float32 buffer
            tl.atomic_add(dq + rows[:, None] * K + o_k[None, :], dq_c, mask=m_tk, sem="relaxed")
            tl.atomic_add(dk + rows[:, None] * K + o_k[None, :], dk_c, mask=m_tk, sem="relaxed")
            tl.atomic_add(dw + rows[:, None] * K + o_k[None, :], dw_c, mask=m_tk, sem="relaxed")
            tl.atomic_add(dbeta + rows, db_c, mask=m_t, sem="relaxed")
        else:
            tl.store(dq + rows[:, None] * K + o_k[None, :], dq_c, mask=m_tk)
            tl.store(dk + rows[:, None] * K + o_k[None, :], dk_c, mask=m_tk)
            tl.store(dw + rows[:, None] * K + o_k[None, :], dw_c, mask=m_tk)
            tl.store(dbeta + rows, db_c, mask=m_t)
        if USE_G:
            qh = tl.dot(qq, hd, input_precision=PREC)
            dlam = scale * e * tl.sum(ddo.to(tl.float32) * qh, axis=1)
            SdS = S * dS
            dlam += tl.sum(SdS, axis=1) - tl.sum(SdS, axis=0)
            AdA = b[:, None] * Araw * dA
            dlam += tl.sum(AdA, axis=1) - tl.sum(AdA, axis=0)
            dlam -= b * e * tl.sum(dr * kh, axis=1)
            X = tl.sum(en_e[:, None] * udh * ww.to(tl.float32), axis=1)
            dlam -= X
            dlam_n = tl.sum(X, axis=0) + tl.exp(lam_n) * tl.sum(tl.sum(h * dh, axis=1), axis=0)
            dlam += tl.where(o_t == last, dlam_n, 0.0)
            dlam = tl.where(m_t, dlam, 0.0)
            # λ_i = Σ_{j≤i} g_j  ⇒  dg_j = Σ_{i≥j} dλ_i
            dgc = tl.sum(tl.where(incl, dlam[:, None], 0.0), axis=0)
            if ATOMIC:
                tl.atomic_add(dg + rows, dgc, mask=m_t, sem="relaxed")
            else:
                tl.store(dg + rows, dgc, mask=m_t)
            dh = tl.exp(lam_n) * dh + scale * tl.dot(tl.trans((qq.to(tl.float32) * e[:, None]).to(DT)), ddo, input_precision=PREC) \
                - tl.dot(tl.trans((kk.to(tl.float32) * (b * e)[:, None]).to(DT)), drd, input_precision=PREC)
        else:
            dh = dh + scale * tl.dot(tl.trans(qq), ddo, input_precision=PREC) \
                - tl.dot(tl.trans((kk.to(tl.float32) * b[:, None]).to(DT)), drd, input_precision=PREC)
    tl.store(dh0 + (i_n * H + i_h) * K * V + hk, dh, mask=m_h)


# ---------------------------------------------------------------------------------------------------------
# Split backward: a serial walk for the state adjoint dh, then a chunk-parallel gradient kernel
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _bwd_chunk_tiles(q, k, w, beta, g, M, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
                     BK: tl.constexpr, USE_G: tl.constexpr, DT: tl.constexpr):
    """The value-independent part of one chunk of the C3 backward, shared by the dh walk and
    ``state_bwd_grads_kernel``. Every load is issued before the arithmetic (the dh walk was faster so: 2.86 →
    2.68 ms at (1, 32768, 16, 128), H200, calls 1 and 2 of reports/gpu-run-run6-NVIDIA-H200-H100.log: two machines).

    Parameters
    ----------
    q, k, w, beta, g, M : pointers
        Read keys/queries [T, H, K], write keys K̃ [T, H, K] (C2), β, g [T, H], M = (I + A)^{-1} [T, H, BT].
    t0, t1 : int64
        First row of the chunk and one past its last row.

    Returns
    -------
    b, lam, m_t : [BT]
        β, λ (within-chunk cumulative log-gate, zero without g) and the row mask.
    qq, kk, ww : [BT, BK] in DT
        Q, K, K̃ of the chunk (zero-padded).
    mm : [BT, BT] in DT
        M of the chunk.
    lam_n : scalar
        λ of the chunk's last row.
    e, en_e : [BT]
        e^λ and e^{λ_n − λ} (the latter zero on padded rows).
    wd : [BT, BK] in DT
        diag(e^{λ_n − λ}) K̃, the write keys as seen by the chunk-end state (K̃ itself without g).
    """
    return _chunk_tiles_of(*_chunk_loads(q, k, w, beta, g, M, t0, t1, i_h, H, K, BT, BK, USE_G), t0, t1, BT,
                             USE_G, DT)


@triton.jit
def _chunk_loads(q, k, w, beta, g, M, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
                     BK: tl.constexpr, USE_G: tl.constexpr):
    """The loads of one chunk for the state walks and ``_bwd_chunk_tiles``: Q, K, K̃ [BT, BK], M [BT, BT], β, g [BT]
    in their stored dtypes (the forward walk's lean mode leaves Q unused, and the compiler drops its load)."""
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    qn = _rows(q, t0, t1, i_h, H, K, BT, o_k, m_k)
    kn = _rows(k, t0, t1, i_h, H, K, BT, o_k, m_k)
    wn = _rows(w, t0, t1, i_h, H, K, BT, o_k, m_k)
    mn = _rows(M, t0, t1, i_h, H, BT, BT, o_t, o_t < BT)
    bn, gn = _gate_rows(g, beta, t0, t1, i_h, H, BT, USE_G)
    return qn, kn, wn, mn, bn, gn


@triton.jit
def _chunk_tiles_of(qn, kn, wn, mn, bn, gn, t0, t1, BT: tl.constexpr, USE_G: tl.constexpr, DT: tl.constexpr):
    """The arithmetic of ``_bwd_chunk_tiles`` on loaded tiles (also the forward walk's; C3)."""
    o_t = tl.arange(0, BT)
    m_t = (t0 + o_t) < t1
    b = bn.to(tl.float32)
    lam = tl.cumsum(gn.to(tl.float32), axis=0)
    qq = qn.to(DT)
    kk = kn.to(DT)
    ww = wn.to(DT)
    mm = mn.to(DT)
    lam_n = tl.sum(tl.where(o_t == (t1 - t0 - 1), lam, 0.0), axis=0)
    e = tl.exp(lam)
    en_e = tl.where(m_t, tl.exp(lam_n - lam), 0.0)
    if USE_G:
        wd = (ww.to(tl.float32) * en_e[:, None]).to(DT)
    else:
        wd = ww
    return b, lam, m_t, qq, kk, ww, mm, lam_n, e, en_e, wd


@triton.jit
def _gate_ratios(lam, BT: tl.constexpr):
    """Γ_ij = e^{λ_i − λ_j} for j ≤ i and 1 above the diagonal (the exponent is zeroed there before exp, C3)."""
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    return tl.exp(tl.where(incl, lam[:, None] - lam[None, :], 0.0))


@triton.jit
def _intra_qk(qq, ww, lam, BT: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr):
    """S = tril(e^{λ_i−λ_j} Q K̃ᵀ) (diagonal included), the intra-chunk output matrix of C3, float32."""
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    qw = tl.dot(qq, tl.trans(ww), input_precision=PREC)
    if USE_G:
        qw = qw * _gate_ratios(lam, BT)
    return tl.where(incl, qw, 0.0)


@triton.jit
def _dr_of_chunk(S, ddo, wd, dh, mm, scale, DT: tl.constexpr, PREC: tl.constexpr):
    """dR = Mᵀ dU with dU = scale Sᵀ dO + diag(e^{λn−λ}) K̃ dh (reverse of C3's U = M R and of O, h_end).

    ``dh`` [BK, BV] float32 is the adjoint of the chunk-end state, ``ddo`` [BT, BV] the chunk's dO in DT.
    Returns dR [BT, BV] in float32; dV = diag(β) dR.
    """
    du = scale * tl.dot(tl.trans(S.to(DT)), ddo, input_precision=PREC) \
        + tl.dot(wd, dh.to(DT), input_precision=PREC)
    return tl.dot(tl.trans(mm), du.to(DT), input_precision=PREC)


@triton.jit
def state_bwd_dh_kernel(
    q, k, w, beta, g, M, do, dhT, cu, chunk_off, scale,
    dv, dhbuf, dh0, drbuf,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_DHT: tl.constexpr, STORE_DR: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """Serial part of the reverse pass of C3: the state adjoint dh, walked over the chunks in reverse.

    One program per (value block, sequence, head). The dh recurrence needs neither the forward states nor U:
    per chunk, dR = Mᵀ (scale Sᵀ dO + diag(e^{λn−λ}) K̃ dh) and
    dh ← e^{λ_n} dh + scale (diag(e^λ) Q)ᵀ dO − (diag(β e^λ) K)ᵀ dR.

    Writes
    ------
    dv : [T, H, V] float32
        diag(β) dR.
    dhbuf : [NT, H, K, V] float32 (or the 16-bit input dtype)
        Per global chunk, the dh used inside it (the adjoint of the chunk-END state), read by
        ``state_bwd_grads_kernel``.
    dh0 : [N, H, K, V] float32
        Adjoint of the initial state.
    drbuf : [T, H, V]
        dR itself, in drbuf's dtype, when STORE_DR (for ``state_bwd_grads_stored_kernel``).
    """
    i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, dh = _state_block(cu, dhT, HAS_DHT, H, K, V, BK, BV)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    NC = tl.cdiv(eos - bos, BT)
    for cc in range(0, NC):
        c = NC - 1 - cc
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        tl.store(dhbuf + ((c_off + c) * H + i_h) * K * V + hk, dh.to(dhbuf.dtype.element_ty), mask=m_h)
        # every load before the arithmetic
        qn, kn, wn, mn, bn, gn = _chunk_loads(q, k, w, beta, g, M, t0, t1, i_h, H, K, BT, BK, USE_G)
        don = _rows(do, t0, t1, i_h, H, V, BT, o_v, m_v)
        b, lam, m_t, qq, kk, ww, mm, lam_n, e, en_e, wd = _chunk_tiles_of(qn, kn, wn, mn, bn, gn, t0, t1, BT, USE_G,
                                                                            DT)
        ddo = don.to(DT)
        S = _intra_qk(qq, ww, lam, BT, USE_G, PREC)
        dr = _dr_of_chunk(S, ddo, wd, dh, mm, scale, DT, PREC)
        tl.store(dv + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], (b[:, None] * dr).to(dv.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])
        if STORE_DR:
            tl.store(drbuf + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], dr.to(drbuf.dtype.element_ty),
                     mask=m_t[:, None] & m_v[None, :])
        # the row scalings on dO and dR (one rounding to DT each, dR's with β folded in as for dv) instead of on Q
        # and K: offline sm_90, Triton 3.6, bf16, 1 stage, 4 warps: stack 120 → 8 B a thread, 2056 → 1800 SASS
        # (gated 480 → 408 B, 3344 → 2896); not yet timed on a GPU
        if USE_G:
            dh = tl.exp(lam_n) * dh \
                + scale * tl.dot(tl.trans(qq), (don.to(tl.float32) * e[:, None]).to(DT), input_precision=PREC) \
                - tl.dot(tl.trans(kk), (dr * (b * e)[:, None]).to(DT), input_precision=PREC)
        else:
            dh = dh + scale * tl.dot(tl.trans(qq), ddo, input_precision=PREC) \
                - tl.dot(tl.trans(kk), (b[:, None] * dr).to(DT), input_precision=PREC)
    tl.store(dh0 + (i_n * H + i_h) * K * V + hk, dh, mask=m_h)


@triton.jit
def _keys_t(ptr, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, o_k, m_k):
    """Key columns o_k of rows [t0, t1) of a [T, H, K] tensor as a K-major [len(o_k), BT] tile (zero-padded), the
    operand layout of a product (·)ᵀ X without a transpose."""
    o_t = tl.arange(0, BT)
    return tl.load(ptr + ((t0 + o_t[None, :]) * H + i_h) * K + o_k[:, None],
                   mask=m_k[:, None] & ((t0 + o_t) < t1)[None, :], other=0.0)


@triton.jit
def _tile_cols(i: tl.constexpr, BKT: tl.constexpr, K: tl.constexpr):
    """Offsets and mask of key tile i (columns i·BKT … i·BKT + BKT − 1 of K)."""
    o_k = i * BKT + tl.arange(0, BKT)
    return o_k, o_k < K


@triton.jit
def _tile_store(ptr, dh, o_k, m_k, o_v, m_v, V: tl.constexpr):
    """Store a [BKT, BV] tile of a [K, V] state at ``ptr`` (its first element), in ptr's dtype."""
    tl.store(ptr + o_k[:, None] * V + o_v[None, :], dh.to(ptr.dtype.element_ty), mask=m_k[:, None] & m_v[None, :])


@triton.jit
def _tile_init(init, i_nh, HAS_INIT: tl.constexpr, i: tl.constexpr, o_v, m_v, K: tl.constexpr, V: tl.constexpr,
               BKT: tl.constexpr, BV: tl.constexpr):
    """Key tile i ([BKT, BV], float32) of state i_nh of ``init`` [N·H, K, V], zeros without it."""
    if HAS_INIT:
        o_k, m_k = _tile_cols(i, BKT, K)
        return tl.load(init + i_nh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :],
                       mask=m_k[:, None] & m_v[None, :], other=0.0).to(tl.float32)
    return tl.zeros([BKT, BV], dtype=tl.float32)


@triton.jit
def _tiles_init(init, i_nh, HAS_INIT: tl.constexpr, o_v, m_v, K: tl.constexpr, V: tl.constexpr, BKT: tl.constexpr,
                BV: tl.constexpr):
    """The up to four key tiles of a [K, V] state (``_tile_init``); tiles past K are the first one again, unused
    placeholders (every use is behind the same ``K > i·BKT`` test)."""
    h1 = _tile_init(init, i_nh, HAS_INIT, 0, o_v, m_v, K, V, BKT, BV)
    h2 = h1
    h3 = h1
    h4 = h1
    if K > BKT:
        h2 = _tile_init(init, i_nh, HAS_INIT, 1, o_v, m_v, K, V, BKT, BV)
    if K > 2 * BKT:
        h3 = _tile_init(init, i_nh, HAS_INIT, 2, o_v, m_v, K, V, BKT, BV)
    if K > 3 * BKT:
        h4 = _tile_init(init, i_nh, HAS_INIT, 3, o_v, m_v, K, V, BKT, BV)
    return h1, h2, h3, h4


@triton.jit
def _tiles_store(ptr, h1, h2, h3, h4, o_v, m_v, K: tl.constexpr, V: tl.constexpr, BKT: tl.constexpr):
    """Store the key tiles of a [K, V] state at ``ptr`` (its first element), in ptr's dtype."""
    o_k, m_k = _tile_cols(0, BKT, K)
    _tile_store(ptr, h1, o_k, m_k, o_v, m_v, V)
    if K > BKT:
        o_k, m_k = _tile_cols(1, BKT, K)
        _tile_store(ptr, h2, o_k, m_k, o_v, m_v, V)
    if K > 2 * BKT:
        o_k, m_k = _tile_cols(2, BKT, K)
        _tile_store(ptr, h3, o_k, m_k, o_v, m_v, V)
    if K > 3 * BKT:
        o_k, m_k = _tile_cols(3, BKT, K)
        _tile_store(ptr, h4, o_k, m_k, o_v, m_v, V)


@triton.jit
def _p_dh(p, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, o_k, m_k, dh, acc,
          DT: tl.constexpr, PREC: tl.constexpr):
    """acc + P_i dh_i: key tile i's part of P dh, P = Mᵀ diag(e^{λn−λ}) K̃ [BT, BKT], dh_i [BKT, BV] float32."""
    pt = _rows(p, t0, t1, i_h, H, K, BT, o_k, m_k).to(DT)
    return tl.dot(pt, dh.to(DT), acc, input_precision=PREC)


@triton.jit
def _dh_tile_step(dh, q, k, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, o_k, m_k, en, dos, drs,
                   USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """Key tile i of the reverse state step (C3): dh_i ← e^{λn} dh_i + Q_iᵀ dOs − K_iᵀ dRs, with the row scalings on
    the right operands, dOs = scale diag(e^λ) dO and dRs = diag(βe^λ) dR [BT, BV] in DT (formed once a chunk), and Q_i,
    K_i loaded K-major ([BKT, BT]) and entering the products as stored. Scaling the Q and K tiles instead (a float32
    round trip per tile) was slower: tiled dh walk 1.593 → 1.536 ms with this form at (1, 32768, 16, 128), bf16, H200
    (reports/gpu-run-run12-NVIDIA-H200-H100.log, call 2)."""
    qt = _keys_t(q, t0, t1, i_h, H, K, BT, o_k, m_k).to(DT)
    kt = _keys_t(k, t0, t1, i_h, H, K, BT, o_k, m_k).to(DT)
    return _dh_tile_update(dh, qt, kt, en, dos, drs, USE_G, PREC)


@triton.jit
def _key_tile_loads(p, q, k, t0, t1, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, o_k, m_k):
    """Key tile o_k of one chunk for the dh walk's step, as stored: P [BT, BKT] and K-major Q, K [BKT, BT]."""
    return (_rows(p, t0, t1, i_h, H, K, BT, o_k, m_k), _keys_t(q, t0, t1, i_h, H, K, BT, o_k, m_k),
            _keys_t(k, t0, t1, i_h, H, K, BT, o_k, m_k))


@triton.jit
def _dh_tile_update(dh, qt, kt, en, dos, drs, USE_G: tl.constexpr, PREC: tl.constexpr):
    """``_dh_tile_step`` on key tiles already loaded (K-major [BKT, BT] Q_i, K_i in the dot dtype)."""
    if USE_G:
        dh = en * dh
    return dh + tl.dot(qt, dos, input_precision=PREC) - tl.dot(kt, drs, input_precision=PREC)


@triton.jit
def state_bwd_dh_tiles_kernel(
    q, k, p, beta, g, do, dhT, cu, chunk_off, scale,
    dv, dhbuf, dh0, drbuf, maps,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKT: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_DHT: tl.constexpr, MAPS: tl.constexpr, STORE_DH0: tl.constexpr, DT: tl.constexpr,
    PREC: tl.constexpr, LOADS_FIRST: tl.constexpr = False,
):
    """Serial part of the reverse pass of C3 with the state adjoint kept as key tiles (the default dh walk).

    One program per (value block, sequence, head) holds dh [K, BV] as up to four float32 tiles of BKT (≤ 64) key
    rows, so that each product works on [BT, BKT] and [BKT, BV] operands (a 4-warp program then keeps them in
    registers; the whole [K, BV] with [BT, K] tiles spilled). The dh-independent factors come from
    ``state_bwd_dul_kernel`` (drbuf holds Mᵀ scale Sᵀ dO on entry, ``p`` is P = Mᵀ diag(e^{λn−λ}) K̃), so per chunk,
    in reverse::

        dR = Mᵀ scale Sᵀ dO + P dh                                  (= Mᵀ dU, C3 reversed)
        dh ← e^{λn} dh + scale (diag(e^λ) Q)ᵀ dO − (diag(β e^λ) K)ᵀ dR

    two products on the chain from one chunk's dh to the next.

    Writes
    ------
    dv : [T, H, V]
        diag(β) dR, in dv's dtype.
    dhbuf : [NT, H, K, V]
        Per global chunk, the adjoint of the chunk-END state, in dhbuf's dtype.
    dh0 : [N, H, K, V] float32
        Adjoint of the initial state.
    drbuf : [T, H, V]
        dR (overwriting Mᵀ scale Sᵀ dO), for ``state_bwd_grads_stored_kernel``.

    Two-level walk (``chunk.walk_segment_length``): ``cu``, ``chunk_off`` are segments and a program walks one. With
    MAPS (the segment pass) nothing is stored per chunk: value blocks walk from dh = 0 and store the segment's offset
    b_s into dh0 [NS, H, K, V], key blocks walk the identity's columns without dO and Mᵀ scale Sᵀ dO and store the
    composed map Φ_s into ``maps`` [NS, H, K, K], so that the dh entering the segment's first chunk is
    Φ_s dh_end + b_s (by default only the value blocks are launched and the carry reads the forward walk's maps
    transposed: ``chunk._dh_maps_source``);
    ``state_seg_carry_kernel`` chains the segments from the last, and a plain pass from each segment's dh_end (dhT
    [NS, H, K, V]) stores dhbuf, dv and dR, without STORE_DH0.

    LOADS_FIRST issues every tile of a chunk (dR's first factor, dO, P, Q, K) before its first product and before the
    dv, dR stores, which the compiler does not move loads across; the two-level passes (1 stage, no pipelined loads)
    run it: an Nsight Compute profile had them waiting on global loads for 59–66 % of their stall cycles (H200,
    reports/gpu-run-run16-NVIDIA-H200.log, call 2), and with it the dh walk took 0.884 → 0.821 ms at
    (1, 32768, 16, 128), bf16 (call 4; bit-identical, 255 registers offline against 214). The plain walk at 2 stages
    was slower with it (0.805 → 0.833 at (2, 16384, 16, 128)) and keeps the loads where they are used.
    """
    i_nh, i_n, i_h, bos, eos, o_v, m_v = _walk_program(cu, H, V, BV)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    o_k1, m_k1 = _tile_cols(0, BKT, K)
    o_k2, m_k2 = _tile_cols(1, BKT, K)
    o_k3, m_k3 = _tile_cols(2, BKT, K)
    o_k4, m_k4 = _tile_cols(3, BKT, K)
    dh1, dh2, dh3, dh4 = _tiles_init(dhT, i_nh, HAS_DHT, o_v, m_v, K, V, BKT, BV)
    m_u = m_v
    if MAPS:
        is_map, o_c, m_c, m_u, dh1 = _map_columns(o_k1, o_v, m_v, K, V, BV)
        if K > BKT:
            _, _, _, _, dh2 = _map_columns(o_k2, o_v, m_v, K, V, BV)
        if K > 2 * BKT:
            _, _, _, _, dh3 = _map_columns(o_k3, o_v, m_v, K, V, BV)
        if K > 3 * BKT:
            _, _, _, _, dh4 = _map_columns(o_k4, o_v, m_v, K, V, BV)
    NC = tl.cdiv(eos - bos, BT)
    for cc in range(0, NC):
        c = NC - 1 - cc
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        m_t = (t0 + o_t) < t1
        if not MAPS:
            _tiles_store(dhbuf + ((c_off + c) * H + i_h) * K * V, dh1, dh2, dh3, dh4, o_v, m_v, K, V, BKT)
        bn, gn = _gate_rows(g, beta, t0, t1, i_h, H, BT, USE_G)
        b = bn.to(tl.float32)
        if USE_G:
            lam = tl.cumsum(gn.to(tl.float32), axis=0)
            e = tl.exp(lam)
            en = tl.exp(tl.sum(tl.where(o_t == (t1 - t0 - 1), lam, 0.0), axis=0))
        else:
            e = tl.full([BT], 1.0, dtype=tl.float32)
            en = 1.0
        if LOADS_FIRST:
            # every tile of the chunk loaded before its first product (and before the dv, dR stores, which the
            # compiler cannot move loads across), so that their latencies overlap
            dr0 = _rows(drbuf, t0, t1, i_h, H, V, BT, o_v, m_u)
            do0 = _rows(do, t0, t1, i_h, H, V, BT, o_v, m_u)
            pt1, qt1, kt1 = _key_tile_loads(p, q, k, t0, t1, i_h, H, K, BT, o_k1, m_k1)
            pt2, qt2, kt2 = pt1, qt1, kt1  # placeholders where K has fewer tiles (every use is behind K > i·BKT)
            pt3, qt3, kt3 = pt1, qt1, kt1
            pt4, qt4, kt4 = pt1, qt1, kt1
            if K > BKT:
                pt2, qt2, kt2 = _key_tile_loads(p, q, k, t0, t1, i_h, H, K, BT, o_k2, m_k2)
            if K > 2 * BKT:
                pt3, qt3, kt3 = _key_tile_loads(p, q, k, t0, t1, i_h, H, K, BT, o_k3, m_k3)
            if K > 3 * BKT:
                pt4, qt4, kt4 = _key_tile_loads(p, q, k, t0, t1, i_h, H, K, BT, o_k4, m_k4)
            dr = tl.dot(pt1.to(DT), dh1.to(DT), dr0.to(tl.float32), input_precision=PREC)
            if K > BKT:
                dr = tl.dot(pt2.to(DT), dh2.to(DT), dr, input_precision=PREC)
            if K > 2 * BKT:
                dr = tl.dot(pt3.to(DT), dh3.to(DT), dr, input_precision=PREC)
            if K > 3 * BKT:
                dr = tl.dot(pt4.to(DT), dh4.to(DT), dr, input_precision=PREC)
        else:
            dr = _rows(drbuf, t0, t1, i_h, H, V, BT, o_v, m_u).to(tl.float32)
            dr = _p_dh(p, t0, t1, i_h, H, K, BT, o_k1, m_k1, dh1, dr, DT, PREC)
            if K > BKT:
                dr = _p_dh(p, t0, t1, i_h, H, K, BT, o_k2, m_k2, dh2, dr, DT, PREC)
            if K > 2 * BKT:
                dr = _p_dh(p, t0, t1, i_h, H, K, BT, o_k3, m_k3, dh3, dr, DT, PREC)
            if K > 3 * BKT:
                dr = _p_dh(p, t0, t1, i_h, H, K, BT, o_k4, m_k4, dh4, dr, DT, PREC)
        rows = ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        if not MAPS:
            tl.store(dv + rows, (b[:, None] * dr).to(dv.dtype.element_ty), mask=m_tv)
            tl.store(drbuf + rows, dr.to(drbuf.dtype.element_ty), mask=m_tv)
        be = b * e
        # the row scalings once a chunk on [BT, BV] (scale e^λ on dO, β e^λ on dR) instead of on every key tile
        drs = (be[:, None] * dr).to(DT)
        if LOADS_FIRST:
            dos = ((scale * e)[:, None] * do0.to(tl.float32)).to(DT)
            dh1 = _dh_tile_update(dh1, qt1.to(DT), kt1.to(DT), en, dos, drs, USE_G, PREC)
            if K > BKT:
                dh2 = _dh_tile_update(dh2, qt2.to(DT), kt2.to(DT), en, dos, drs, USE_G, PREC)
            if K > 2 * BKT:
                dh3 = _dh_tile_update(dh3, qt3.to(DT), kt3.to(DT), en, dos, drs, USE_G, PREC)
            if K > 3 * BKT:
                dh4 = _dh_tile_update(dh4, qt4.to(DT), kt4.to(DT), en, dos, drs, USE_G, PREC)
        else:
            dos = ((scale * e)[:, None] * _rows(do, t0, t1, i_h, H, V, BT, o_v, m_u).to(tl.float32)).to(DT)
            dh1 = _dh_tile_step(dh1, q, k, t0, t1, i_h, H, K, BT, o_k1, m_k1, en, dos, drs, USE_G, DT, PREC)
            if K > BKT:
                dh2 = _dh_tile_step(dh2, q, k, t0, t1, i_h, H, K, BT, o_k2, m_k2, en, dos, drs, USE_G, DT, PREC)
            if K > 2 * BKT:
                dh3 = _dh_tile_step(dh3, q, k, t0, t1, i_h, H, K, BT, o_k3, m_k3, en, dos, drs, USE_G, DT, PREC)
            if K > 3 * BKT:
                dh4 = _dh_tile_step(dh4, q, k, t0, t1, i_h, H, K, BT, o_k4, m_k4, en, dos, drs, USE_G, DT, PREC)
    if MAPS:
        _segment_end_store(dh0, maps, dh1, i_nh, o_k1, m_k1, o_c, m_c, is_map, K, V)
        if K > BKT:
            _segment_end_store(dh0, maps, dh2, i_nh, o_k2, m_k2, o_c, m_c, is_map, K, V)
        if K > 2 * BKT:
            _segment_end_store(dh0, maps, dh3, i_nh, o_k3, m_k3, o_c, m_c, is_map, K, V)
        if K > 3 * BKT:
            _segment_end_store(dh0, maps, dh4, i_nh, o_k4, m_k4, o_c, m_c, is_map, K, V)
    elif STORE_DH0:
        _tiles_store(dh0 + i_nh.to(tl.int64) * K * V, dh1, dh2, dh3, dh4, o_v, m_v, K, V, BKT)


@triton.jit
def _key_grads(dq, dk, dw, p_k, m_tk, dS, dA, gq, gk, gw, qq, kk, ww, b, lam, e, en_e, scale, BT: tl.constexpr,
               USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The key-side gradients of one chunk for the key columns of qq, kk, ww (Q, K, K̃ in DT) and of the value
    contractions gq = dO h⁰ᵀ, gk = dR h⁰ᵀ, gw = U dhᵀ (C3 reversed), with G_qw = Γ ⊙ dS, G_kw = diag(β) Γ ⊙ dA:
    dq = G_qw K̃ + scale diag(e^λ) dO h⁰ᵀ, dk = G_kw K̃ − diag(β e^λ) dR h⁰ᵀ, dK̃ = diag(e^{λn−λ}) U dhᵀ + G_qwᵀ Q +
    G_kwᵀ K, formed in float32 and stored at offsets p_k (mask m_tk) of dq, dk, dw in their dtypes, each before the
    next is formed (so that one [BT, BK] float32 result is live at a time: offline sm_90, Triton 3.6, bf16, the gated
    stored-operand gradient kernel spills 232 → 184 B a thread (FROM_U: 312 → 272) against forming all three first)."""
    if USE_G:
        gam = _gate_ratios(lam, BT)
        gqw_d = (dS * gam).to(DT)
        gkw_d = (b[:, None] * dA * gam).to(DT)
        rq = scale * e  # the rows' factors of dO h⁰ᵀ and dR h⁰ᵀ
        rk = b * e
        dw_c = en_e[:, None] * gw
    else:
        gqw_d = dS.to(DT)
        gkw_d = (b[:, None] * dA).to(DT)
        rq = tl.full([BT], scale, dtype=tl.float32)
        rk = b
        dw_c = gw
    tl.store(dq + p_k, (tl.dot(gqw_d, ww, input_precision=PREC) + rq[:, None] * gq).to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + p_k, (tl.dot(gkw_d, ww, input_precision=PREC) - rk[:, None] * gk).to(dk.dtype.element_ty), mask=m_tk)
    dw_c += tl.dot(tl.trans(gqw_d), qq, input_precision=PREC) + tl.dot(tl.trans(gkw_d), kk, input_precision=PREC)
    tl.store(dw + p_k, dw_c.to(dw.dtype.element_ty), mask=m_tk)


@triton.jit
def _dg_of_chunk(S, dS, Araw, dA, qq, gq, gw, ww, b, e, en_e, dlk_e, hdh, lam_n, first, scale, t0, t1, m_t,
                 BT: tl.constexpr):
    """dL/dg of one chunk (reverse-cumulated: λ_i = Σ_{j≤i} g_j ⇒ dg_j = Σ_{i≥j} dλ_i), for the key columns of
    qq, gq, gw, ww, hdh; the key-independent terms (S ⊙ dS, β A ⊙ dA and dlk_e = e^λ Σ_v dR ⊙ K h) are weighted by
    ``first`` (1 in exactly one of the programs that split the key columns)."""
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    dlam = scale * e * tl.sum(qq.to(tl.float32) * gq, axis=1)
    SdS = S * dS
    AdA = b[:, None] * Araw * dA
    dlam += first * (tl.sum(SdS, axis=1) - tl.sum(SdS, axis=0) + tl.sum(AdA, axis=1) - tl.sum(AdA, axis=0)
                     - b * dlk_e)
    X = tl.sum(en_e[:, None] * gw * ww.to(tl.float32), axis=1)
    dlam -= X
    dlam_n = tl.sum(X, axis=0) + tl.exp(lam_n) * tl.sum(hdh, axis=0)
    dlam += tl.where(o_t == (t1 - t0 - 1), dlam_n, 0.0)
    dlam = tl.where(m_t, dlam, 0.0)
    return tl.sum(tl.where(incl, dlam[:, None], 0.0), axis=0)


@triton.jit
def state_bwd_grads_kernel(
    q, k, v, w, beta, g, M, hbuf, dhbuf, do, cu, chunk_idx, scale,
    dq, dk, dw, dbeta, dg,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """Chunk-parallel part of the reverse pass of C3: the gradients of q, k, K̃, β and g of one chunk.

    One program per (global chunk, head), from the chunk-start state h (hbuf, forward) and the chunk-end
    adjoint dh (dhbuf, ``state_bwd_dh_kernel``). The value blocks are walked inside the program, so the
    sums over values need no atomics: per block, U = M diag(β)(V − diag(e^λ) K h) and dR (as in the dh walk)
    are recomputed and the value contractions dS = scale dO Uᵀ, dA = −dR Uᵀ, dO hᵀ, dR hᵀ, U dhᵀ,
    Σ_v dR ⊙ (V − e^λ K h), Σ_v dR ⊙ K h and Σ h ⊙ dh are accumulated in float32; the [BT, BK] products with
    Q, K, K̃ follow once per chunk. The formulas are those of ``state_bwd_kernel``, summed over V
    before instead of after the last products; Σ_v dO ⊙ (Q h) is taken as Σ_k Q ⊙ (dO hᵀ).

    Writes (stores, every row of the chunk)
    ------
    dq, dk, dw : [T, H, K] float32
        dk is the state part only (the d-scan adds its own); dw = dL/dK̃.
    dbeta : [T, H] float32
        State part of dβ.
    dg : [T, H] float32
        dL/dg (reverse-cumulated within the chunk), when USE_G.
    """
    i_c = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    incl = o_t[:, None] >= o_t[None, :]
    strict = o_t[:, None] > o_t[None, :]
    b, lam, m_t, qq, kk, ww, mm, lam_n, e, en_e, wd = _bwd_chunk_tiles(
        q, k, w, beta, g, M, t0, t1, i_h, H, K, BT, BK, USE_G, DT)
    S = _intra_qk(qq, ww, lam, BT, USE_G, PREC)
    st = (i_c.to(tl.int64) * H + i_h) * K * V
    dS = tl.zeros([BT, BT], dtype=tl.float32)   # Σ_v dO Uᵀ
    dA = tl.zeros([BT, BT], dtype=tl.float32)   # Σ_v dR Uᵀ
    gq = tl.zeros([BT, BK], dtype=tl.float32)   # dO hᵀ
    gk = tl.zeros([BT, BK], dtype=tl.float32)   # dR hᵀ
    gw = tl.zeros([BT, BK], dtype=tl.float32)   # U dhᵀ
    db = tl.zeros([BT], dtype=tl.float32)       # Σ_v dR ⊙ (V − e^λ K h)
    dlk = tl.zeros([BT], dtype=tl.float32)      # Σ_v dR ⊙ K h
    hdh = tl.zeros([BK], dtype=tl.float32)      # Σ_v h ⊙ dh
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        hk = o_k[:, None] * V + o_v[None, :]
        m_h = m_k[:, None] & m_v[None, :]
        h = tl.load(hbuf + st + hk, mask=m_h, other=0.0).to(tl.float32)
        dh = tl.load(dhbuf + st + hk, mask=m_h, other=0.0).to(tl.float32)
        vv = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
        ddo = _load2(do, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT)
        hd = h.to(DT)
        kh = tl.dot(kk, hd, input_precision=PREC)
        if USE_G:
            vr = vv - e[:, None] * kh
        else:
            vr = vv - kh
        ud = tl.dot(mm, (b[:, None] * vr).to(DT), input_precision=PREC).to(DT)
        dr = _dr_of_chunk(S, ddo, wd, dh, mm, scale, DT, PREC)
        drd = dr.to(DT)
        dS += tl.dot(ddo, tl.trans(ud), input_precision=PREC)
        dA += tl.dot(drd, tl.trans(ud), input_precision=PREC)
        gq += tl.dot(ddo, tl.trans(hd), input_precision=PREC)
        gk += tl.dot(drd, tl.trans(hd), input_precision=PREC)
        gw += tl.dot(ud, tl.trans(dh.to(DT)), input_precision=PREC)
        db += tl.sum(dr * vr, axis=1)
        if USE_G:
            dlk += tl.sum(dr * kh, axis=1)
            hdh += tl.sum(h * dh, axis=1)
    dS = tl.where(incl, scale * dS, 0.0)
    dA = tl.where(strict, -dA, 0.0)
    kw = tl.dot(kk, tl.trans(ww), input_precision=PREC)
    if USE_G:
        Araw = tl.where(strict, kw * _gate_ratios(lam, BT), 0.0)
    else:
        Araw = tl.where(strict, kw, 0.0)
    rows = (t0 + o_t) * H + i_h
    _key_grads(dq, dk, dw, rows[:, None] * K + o_k[None, :], m_t[:, None] & m_k[None, :], dS, dA, gq, gk, gw, qq, kk,
               ww, b, lam, e, en_e, scale, BT, USE_G, DT, PREC)
    tl.store(dbeta + rows, db + tl.sum(dA * Araw, axis=1), mask=m_t)
    if USE_G:
        dgc = _dg_of_chunk(S, dS, Araw, dA, qq, gq, gw, ww, b, e, en_e, e * dlk, hdh, lam_n, 1.0, scale, t0, t1, m_t,
                           BT)
        tl.store(dg + rows, dgc, mask=m_t)


@triton.jit
def state_bwd_grads_stored_kernel(
    q, k, v, w, beta, g, M, hbuf, dhbuf, vrbuf, drbuf, do, cu, chunk_idx, scale,
    dq, dk, dw, dbeta, dgp, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, BKO: tl.constexpr,
    USE_G: tl.constexpr, FROM_U: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
):
    """``state_bwd_grads_kernel`` from stored operands (``OSDN_STATE_BWD=stored``, the default; 2.50 → 1.62 ms at
    (8, 4096, 16, 128) bf16 on an H200, ``chunk._state_bwd_mode``): the forward's residual R = V − diag(e^λ) K h⁰
    (vrbuf) and the dh walk's dR (drbuf) are read instead of recomputed over all K, so one program per (global chunk,
    head, block of BKO key columns)
    touches only its key columns of h, dh, Q, K, K̃ (and all of K once for the [BT, BT] products Q K̃ᵀ, K K̃ᵀ).

    Same formulas (C3 reversed): U = M diag(β) R, dS = scale dO Uᵀ, dA = −dR Uᵀ, dq = G_qw K̃ + scale diag(e) dO hᵀ,
    dk = G_kw K̃ − diag(β e) dR hᵀ, dK̃ = diag(e^{λn−λ}) U dhᵀ + G_qwᵀ Q + G_kwᵀ K, dβ = Σ_v dR ⊙ R + Σ dA ⊙ A;
    Σ_v dR ⊙ e^λ K h of dg is taken as Σ_v dR ⊙ (V − R).

    FROM_U (after the two-product walk, ``state_fwd_wu_kernel``, which stores U instead of R; one key block, BKO ≥ K):
    ``vrbuf`` holds U, which is read instead of formed as M diag(β) R, and R enters only through its row sums with dR,
    Σ_v dR ⊙ R = Σ_v dR ⊙ V − e^λ ⊙ Σ_k (dR h⁰ᵀ) ⊙ K, where dR h⁰ᵀ is the product gk the kernel forms anyway (all key
    columns in the one block): one product fewer than without it.

    Writes dq, dk, dw [T, H, K] (this program's columns, each in its buffer's dtype: float32, or the 16-bit input
    dtype when the caller stores them so), dbeta [T, H] (first key block) and dgp [NKB, T, H] (this key block's part
    of dL/dg, reverse-cumulated in the chunk; the caller sums).
    """
    # grid (NT · NKB, H), the key block varying fastest: the NKB programs of a chunk run together and share its
    # R, dR, dO, K, K̃ reads through L2 (with the chunk fastest they ran NT programs apart and each read them from memory)
    NKB: tl.constexpr = (K + BKO - 1) // BKO
    i_c = tl.program_id(0) // NKB
    i_kb = tl.program_id(0) % NKB
    i_h = tl.program_id(1)
    i_n, bos, t0, t1 = _chunk_rows(cu, chunk_idx, i_c, BT)
    o_t = tl.arange(0, BT)
    incl = o_t[:, None] >= o_t[None, :]
    strict = o_t[:, None] > o_t[None, :]
    b, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
    lam_n = tl.sum(tl.where(o_t == (t1 - t0 - 1), lam, 0.0), axis=0)
    e = tl.exp(lam)
    en_e = tl.where(m_t, tl.exp(lam_n - lam), 0.0)
    mm = _load2(M, t0, o_t, m_t, i_h, H, BT, o_t, o_t < BT).to(DT)
    o_ko = i_kb * BKO + tl.arange(0, BKO)
    m_ko = o_ko < K
    st = (i_c.to(tl.int64) * H + i_h) * K * V
    dS = tl.zeros([BT, BT], dtype=tl.float32)    # Σ_v dO Uᵀ
    dA = tl.zeros([BT, BT], dtype=tl.float32)    # Σ_v dR Uᵀ
    gq = tl.zeros([BT, BKO], dtype=tl.float32)   # dO hᵀ (this block's key columns)
    gk = tl.zeros([BT, BKO], dtype=tl.float32)   # dR hᵀ
    gw = tl.zeros([BT, BKO], dtype=tl.float32)   # U dhᵀ
    db = tl.zeros([BT], dtype=tl.float32)        # Σ_v dR ⊙ R
    dlk = tl.zeros([BT], dtype=tl.float32)       # Σ_v dR ⊙ (V − R) = e^λ Σ_v dR ⊙ K h
    hdh = tl.zeros([BKO], dtype=tl.float32)      # Σ_v h ⊙ dh (this block's key columns)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        dr = _load2(drbuf, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
        ddo = _load2(do, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT)
        hko = o_ko[:, None] * V + o_v[None, :]
        m_ho = m_ko[:, None] & m_v[None, :]
        hod = tl.load(hbuf + st + hko, mask=m_ho, other=0.0).to(DT)
        dhod = tl.load(dhbuf + st + hko, mask=m_ho, other=0.0).to(DT)
        if FROM_U:
            ud = _load2(vrbuf, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(DT)
            vr = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)  # V here: R's row sums come after the loop
        else:
            vr = _load2(vrbuf, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
            ud = tl.dot(mm, (b[:, None] * vr).to(DT), input_precision=PREC).to(DT)
        drd = dr.to(DT)
        dS += tl.dot(ddo, tl.trans(ud), input_precision=PREC)
        dA += tl.dot(drd, tl.trans(ud), input_precision=PREC)
        gq += tl.dot(ddo, tl.trans(hod), input_precision=PREC)
        gk += tl.dot(drd, tl.trans(hod), input_precision=PREC)
        gw += tl.dot(ud, tl.trans(dhod), input_precision=PREC)
        db += tl.sum(dr * vr, axis=1)
        if USE_G:
            if not FROM_U:
                vv = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
                dlk += tl.sum(dr * (vv - vr), axis=1)
            hdh += tl.sum(hod.to(tl.float32) * dhod.to(tl.float32), axis=1)
    dS = tl.where(incl, scale * dS, 0.0)
    dA = tl.where(strict, -dA, 0.0)
    # Q K̃ᵀ and K K̃ᵀ over all K, one key block at a time (after the value loop: nothing [BT, BT] beyond dS, dA
    # stays live through it)
    qw = tl.zeros([BT, BT], dtype=tl.float32)
    kw = tl.zeros([BT, BT], dtype=tl.float32)
    # (with one key block, loading Q, K, K̃ once for these products and the key gradients instead of twice measured no
    # faster: 0.903 → 0.892 ms at (1, 32768, 16, 128), 0.871 → 0.862 at (8, 4096, 16, 128), fwd+bwd unchanged; loaded
    # before the value loop, 0.944 / 0.858 and not bit-identical (bf16, H200; reports/gpu-run-run16-NVIDIA-H200.log,
    # call 5))
    for i_k in range(0, tl.cdiv(K, BKO)):
        o_kc = i_k * BKO + tl.arange(0, BKO)
        m_kc = o_kc < K
        wc = _load2(w, t0, o_t, m_t, i_h, H, K, o_kc, m_kc).to(DT)
        kw += tl.dot(_load2(k, t0, o_t, m_t, i_h, H, K, o_kc, m_kc).to(DT), tl.trans(wc), input_precision=PREC)
        if USE_G:
            qw += tl.dot(_load2(q, t0, o_t, m_t, i_h, H, K, o_kc, m_kc).to(DT), tl.trans(wc), input_precision=PREC)
    if USE_G:
        gam = _gate_ratios(lam, BT)
        S = tl.where(incl, qw * gam, 0.0)  # needed for dg only
        Araw = tl.where(strict, kw * gam, 0.0)
    else:
        Araw = tl.where(strict, kw, 0.0)
    qo = _load2(q, t0, o_t, m_t, i_h, H, K, o_ko, m_ko).to(DT)
    ko = _load2(k, t0, o_t, m_t, i_h, H, K, o_ko, m_ko).to(DT)
    wo = _load2(w, t0, o_t, m_t, i_h, H, K, o_ko, m_ko).to(DT)
    if FROM_U:
        # Σ_v dR ⊙ e^λ K h⁰ = e^λ ⊙ Σ_k (dR h⁰ᵀ) ⊙ K; db held Σ_v dR ⊙ V
        dlk = e * tl.sum(gk * ko.to(tl.float32), axis=1)
        db = db - dlk
    rows = (t0 + o_t) * H + i_h
    if i_kb == 0:
        tl.store(dbeta + rows, db + tl.sum(dA * Araw, axis=1), mask=m_t)
    if USE_G:
        # this key block's sums over key columns; the value-only terms once, in the first block. Before the key
        # gradients, so that S, Araw and hdh are not live through them (with dβ first too, offline sm_90, Triton 3.6,
        # bf16, 2 stages: stack 656 → 232 B a thread gated, 64 → 0 ungated without FROM_U; the same operations)
        dgc = _dg_of_chunk(S, dS, Araw, dA, qo, gq, gw, wo, b, e, en_e, dlk, hdh, lam_n, (i_kb == 0).to(tl.float32),
                           scale, t0, t1, m_t, BT)
        tl.store(dgp + i_kb.to(tl.int64) * T * H + rows, dgc, mask=m_t)
    _key_grads(dq, dk, dw, rows[:, None] * K + o_ko[None, :], m_t[:, None] & m_ko[None, :], dS, dA, gq, gk, gw, qo,
               ko, wo, b, lam, e, en_e, scale, BT, USE_G, DT, PREC)
