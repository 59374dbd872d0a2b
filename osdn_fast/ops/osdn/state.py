"""The state part of the chunkwise form (spec C3) and its reverse-mode derivative.

One program per (value block, sequence, head) walks the chunks of its sequence in order and keeps its
[K, BV] slice of h = Sᵀ in float32 registers. Value columns are independent given the write keys, so
the V split needs no communication; the gradients that sum over values (q, k, K̃, β, λ) are written
as per-value-block partials and summed by the caller.

Per chunk (n rows, λ within-chunk cumulative log-gate, e = e^λ, M = (I + A)^{-1} from :mod:`wy`):
    R = diag(β)(V − diag(e) K h⁰),  U = M R
    O = scale (diag(e) Q h⁰ + tril(e^{λ_i−λ_j} Q K̃ᵀ) U)
    h_end = e^{λ_n} h⁰ + (diag(e^{λ_n − λ}) K̃)ᵀ U
"""

from __future__ import annotations

import triton
import triton.language as tl

from .wy import _gate_cumsum


@triton.jit
def _load2(ptr, t0, o_t, m_t, i_h, H: tl.constexpr, D: tl.constexpr, o_d, m_d):
    return tl.load(ptr + ((t0 + o_t[:, None]) * H + i_h) * D + o_d[None, :],
                   mask=m_t[:, None] & m_d[None, :], other=0.0)


@triton.jit
def state_fwd_kernel(
    q, k, v, w, beta, g, M, h0, o, hbuf, hT, cu, chunk_off, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_H: tl.constexpr, STORE_HT: tl.constexpr,
    DT: tl.constexpr, PREC: tl.constexpr,
):
    """o [T, H, V] (E6 via C3); hbuf [NT, H, K, V] chunk-start states (fp32); hT [N, H, K, V]."""
    i_v = tl.program_id(0)
    i_nh = tl.program_id(1)
    i_n = i_nh // H
    i_h = i_nh % H
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    hk = o_k[:, None] * V + o_v[None, :]
    m_h = m_k[:, None] & m_v[None, :]
    if HAS_H0:
        h = tl.load(h0 + (i_n * H + i_h) * K * V + hk, mask=m_h, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BK, BV], dtype=tl.float32)
    incl = o_t[:, None] >= o_t[None, :]
    for c in range(0, tl.cdiv(eos - bos, BT)):
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        if STORE_H:
            tl.store(hbuf + ((c_off + c) * H + i_h) * K * V + hk, h, mask=m_h)
        b, lam, m_t = _gate_cumsum(g, beta, bos, t0, t1, i_h, H, BT, USE_G)
        qq = _load2(q, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        kk = _load2(k, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        ww = _load2(w, t0, o_t, m_t, i_h, H, K, o_k, m_k).to(DT)
        vv = _load2(v, t0, o_t, m_t, i_h, H, V, o_v, m_v).to(tl.float32)
        mm = _load2(M, t0, o_t, m_t, i_h, H, BT, o_t, o_t < BT)
        hd = h.to(DT)
        e = tl.exp(lam)
        if USE_G:
            lam_n = tl.sum(tl.where(o_t == (t1 - t0 - 1), lam, 0.0), axis=0)
        kh = tl.dot(kk, hd, input_precision=PREC)
        r = b[:, None] * (vv - e[:, None] * kh)
        u = tl.dot(mm.to(DT), r.to(DT), input_precision=PREC)
        qw = tl.dot(qq, tl.trans(ww), input_precision=PREC)
        if USE_G:
            qw = tl.where(incl, qw * tl.exp(tl.where(incl, lam[:, None] - lam[None, :], 0.0)), 0.0)
            oo = e[:, None] * tl.dot(qq, hd, input_precision=PREC)
        else:
            qw = tl.where(incl, qw, 0.0)
            oo = tl.dot(qq, hd, input_precision=PREC)
        oo = scale * (oo + tl.dot(qw.to(DT), u.to(DT), input_precision=PREC))
        tl.store(o + ((t0 + o_t[:, None]) * H + i_h) * V + o_v[None, :], oo.to(o.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])
        if USE_G:
            wd = (ww.to(tl.float32) * tl.exp(lam_n - lam)[:, None]).to(DT)
            h = tl.exp(lam_n) * h + tl.dot(tl.trans(wd), u.to(DT), input_precision=PREC)
        else:
            h = h + tl.dot(tl.trans(ww), u.to(DT), input_precision=PREC)
    if STORE_HT:
        tl.store(hT + (i_n * H + i_h) * K * V + hk, h, mask=m_h)


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
    i_v = tl.program_id(0)
    i_nh = tl.program_id(1)
    i_n = i_nh // H
    i_h = i_nh % H
    bos = tl.load(cu + i_n).to(tl.int64)
    eos = tl.load(cu + i_n + 1).to(tl.int64)
    c_off = tl.load(chunk_off + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    hk = o_k[:, None] * V + o_v[None, :]
    m_h = m_k[:, None] & m_v[None, :]
    if HAS_DHT:
        dh = tl.load(dhT + (i_n * H + i_h) * K * V + hk, mask=m_h, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BK, BV], dtype=tl.float32)
    incl = o_t[:, None] >= o_t[None, :]
    strict = o_t[:, None] > o_t[None, :]
    NC = tl.cdiv(eos - bos, BT)
    for cc in range(0, NC):
        c = NC - 1 - cc
        t0 = bos + c * BT
        t1 = tl.minimum(t0 + BT, eos)
        h = tl.load(hbuf + ((c_off + c) * H + i_h) * K * V + hk, mask=m_h, other=0.0)
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
