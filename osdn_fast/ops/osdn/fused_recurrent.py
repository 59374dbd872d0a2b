"""Token-by-token OSDN (spec E1–E8) for decoding: ``fused_recurrent_osdn``.

One program per (value block, sequence, head) carries its [K, BV] slice of h = Sᵀ and the learner d in
float32 registers, token by token, exactly in the order of the recurrence. It takes and returns
(state, preconditioner), so decoding one token at a time from a carried cache equals ``chunk_osdn`` over
the whole sequence (T1).

Gradients: the backward pass is the chunkwise one of :mod:`chunk` (the same function, E1–E8 = C1–C3),
which recomputes the chunk-start states it needs; decoding is normally run without gradients.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
import triton
import triton.language as tl

from .chunk import _chunk_bwd, _chunk_fwd, _finish
from .state import _state_block
from .utils import cdiv, cu_tensor, next_pow2


@triton.jit
def fused_recurrent_fwd_kernel(
    q, k, v, beta, g, alpha, eta, d_prior, h0, d0, o, hT, dT, cu, scale, d_min, d_max,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_H0: tl.constexpr, HAS_D0: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    """o [T, H, V]; hT [N, H, K, V] and dT [N, H, K] (float32) when STORE_FINAL."""
    i_n, i_h, bos, eos, o_k, m_k, o_v, m_v, hk, m_h, h = _state_block(cu, h0, HAS_H0, H, K, V, BK, BV)
    i_v = tl.program_id(0)
    dp = tl.load(d_prior + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    if HAS_D0:
        d = tl.load(d0 + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        d = dp
    et = tl.load(eta + i_h).to(tl.float32)
    for t in range(bos, eos):
        qt = tl.load(q + (t * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        kt = tl.load(k + (t * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        vt = tl.load(v + (t * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        bt = tl.load(beta + t * H + i_h).to(tl.float32)
        if HAS_ALPHA:
            at = tl.load(alpha + t * H + i_h).to(tl.float32)
            dbar = dp + at * (d - dp)  # E1
        else:
            dbar = d
        p = tl.minimum(tl.maximum(dbar, d_min, propagate_nan=tl.PropagateNan.ALL), d_max,
                       propagate_nan=tl.PropagateNan.ALL)  # E2
        kw = p * kt  # E3
        if USE_G:
            h = h * tl.exp(tl.load(g + t * H + i_h).to(tl.float32))  # γ_t S_{t-1}
        r = vt - tl.sum(h * kt[:, None], axis=0)  # E4
        h = h + bt * kw[:, None] * r[None, :]  # E5
        ot = scale * tl.sum(h * qt[:, None], axis=0)  # E6
        tl.store(o + (t * H + i_h) * V + o_v, ot.to(o.dtype.element_ty), mask=m_v)
        k2 = kt * kt
        s = tl.sum(k2, axis=0)
        u = bt * k2
        rho = 1.0 - tl.sum(u * dbar, axis=0)  # E7
        nz = s > 0
        d = dbar + tl.where(nz, et * rho / tl.where(nz, s, 1.0), 0.0) * u  # E8
    if STORE_FINAL:
        tl.store(hT + (i_n * H + i_h) * K * V + hk, h, mask=m_h)
        if i_v == 0:
            tl.store(dT + (i_n * H + i_h) * K + o_k, d, mask=m_k)


@lru_cache(maxsize=64)
def _blocks(K: int, V: int):
    """(BK, BV, number of value blocks) of :func:`fused_recurrent_fwd_kernel` for head dims K, V (cached: the same
    on every decoding step)."""
    BK = next_pow2(K)
    BV = min(next_pow2(V), 32 if BK > 128 else 64)
    return BK, BV, cdiv(V, BV)


class FusedRecurrentOSDNFunction(torch.autograd.Function):
    """Forward: :func:`fused_recurrent_fwd_kernel`; backward: the chunkwise Triton backward (C1–C3)."""

    # ``run`` reads q, k, v, beta, g, alpha as flat token rows through the offsets ``cu_host``, so a contiguous
    # [B, T, H, ·] tensor needs no [1, B·T, H, ·] view (see ``_finish``); the autograd path is still given packed
    # views, which the chunkwise backward needs.
    run_takes_batched = True

    @staticmethod
    def forward(ctx, q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, output_final_state,
                chunk_size):
        o, hT, dT = FusedRecurrentOSDNFunction.run(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min,
                                                   d_max, cu_host, output_final_state, chunk_size)
        ctx.save_for_backward(q, k, v, beta, g, alpha, eta, d_prior, h0, d0)
        ctx.meta = (scale, d_min, d_max, cu_host, chunk_size, output_final_state)
        return o, hT, dT

    @staticmethod
    def run(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, output_final_state,
            chunk_size):
        """The forward kernel launch, shared by the autograd path and the no-gradient (decoding) path.

        q, k, v, beta, g, alpha are contiguous, [1, B·T, H, ·] or [B, T, H, ·] (the same rows); eta [H] and
        d_prior [H, K] are contiguous float32 (``_finish``); h0, d0 contiguous or None.
        """
        H, K, V = q.shape[-2], q.shape[-1], v.shape[-1]
        N = len(cu_host) - 1
        BK, BV, NV = _blocks(K, V)
        dev = q.device
        o = torch.empty_like(v)
        hT = torch.empty(N, H, K, V, device=dev, dtype=torch.float32) if output_final_state else None
        dT = torch.empty(N, H, K, device=dev, dtype=torch.float32) if output_final_state else None
        fused_recurrent_fwd_kernel[(NV, N * H)](
            q, k, v, beta, g, alpha, eta, d_prior, h0, d0, o, hT, dT, cu_tensor(cu_host, dev),
            float(scale), float(d_min), float(d_max), H=H, K=K, V=V, BK=BK, BV=BV,
            USE_G=g is not None, HAS_ALPHA=alpha is not None, HAS_H0=h0 is not None, HAS_D0=d0 is not None,
            STORE_FINAL=output_final_state,
        )
        return o, hT, dT

    @staticmethod
    def backward(ctx, do, dhT, ddT):
        q, k, v, beta, g, alpha, eta, d_prior, h0, d0 = ctx.saved_tensors
        scale, d_min, d_max, cu_host, chunk_size, _ = ctx.meta
        aux = _chunk_fwd(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, False,
                         chunk_size, store=True)[3]
        grads = _chunk_bwd(aux, do, dhT, ddT)
        return grads + (None,) * 6


def fused_recurrent_osdn(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None, use_qk_l2norm_in_kernel=False,
    cu_seqlens=None, chunk_size: int = 64,
):
    """OSDN token by token (spec E1–E8, §6), for decoding from a carried (state, preconditioner).

    Parameters
    ----------
    q, k : Tensor [B, T, H, K]; v : Tensor [B, T, H, V]
        float32, float16 or bfloat16.
    beta, g, alpha : Tensor [B, T, H]
        Write strength β (E5), log-decay g (E4/E5, optional), APF gate α (E1, optional).
    eta : float or Tensor [] / [H]
        Hyper step η of E8.
    d_prior : Tensor [H, K], optional
        Prior d° (E1); default ones.
    scale : float, optional
        Output scale of E6; default K^(-1/2).
    initial_state : Tensor [N, H, K, V], optional
        h_0 = S_0ᵀ.
    initial_precond : Tensor [N, H, K], optional
        d_0; default d°.
    output_final_state : bool
        Return (h_T, d_T) in float32.
    d_min, d_max : float
        Clip bounds of E2.
    use_qk_l2norm_in_kernel : bool
        Replace q, k by x / sqrt(‖x‖² + 1e-6) first (differentiated).
    cu_seqlens : int Tensor [N + 1], optional
        Packed sequences (B = 1).
    chunk_size : int
        Chunk length of the chunkwise backward (C1–C3) used for gradients.

    Returns
    -------
    o : Tensor [B, T, H, V], dtype of v
    final_state : float32 [N, H, K, V] or None
    final_precond : float32 [N, H, K] or None
    """
    return _finish(FusedRecurrentOSDNFunction, q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state,
                   initial_precond, output_final_state, d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens,
                   chunk_size)
