"""``chunk_osdn``: the chunkwise form C1–C3 of OSDN as a torch.autograd.Function over Triton kernels.

Forward:  d-scan (E1/E2/E8; chunk form C1 of :mod:`dscan_chunk` by default, the token-serial
:mod:`dscan` with ``OSDN_DSCAN=token``) → write keys K̃ (C2) → UT transform M = (I + A)^{-1} per chunk
(:mod:`wy`, C3; 16×16 blocked for chunks up to 64 rows) → state walk over chunks (:mod:`state`, C3; for fewer than
64 (sequence, head) pairs the two-product walk, with W, u and the output formed chunk-parallel, ``_state_walk_mode``;
two-level for few long sequences, ``walk_segment_length``).
Backward: reverse pass of C3 in two kernels (:mod:`state`): a serial walk over the chunks in reverse for the
state adjoint dh (storing each chunk's dh, and dv), then one chunk-parallel program per (chunk, head) for the
gradients of q, k, K̃, β, g from the stored chunk-start states and the stored dh (U, R recomputed); then the
reverse d-scan. ``OSDN_STATE_BWD=fused`` selects the older single kernel that does everything in the serial
walk (A/B benchmarks); ``OSDN_STATE_BWD=stored`` the experiment that stores R and dR instead of recomputing them
(``_state_bwd_mode``).
All sequences are handled in packed form: without ``cu_seqlens`` a [B, T] batch is viewed as B packed
sequences of length T (a view, no copy).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from osdn_fast.validation import validate
from .dscan import dscan_bwd_kernel, dscan_fwd_kernel
from .dscan_chunk import dscan_chunk_backward, dscan_chunk_forward, scan_segment_length
from .state import (state_bwd_dh_kernel, state_bwd_dh_tiles_kernel, state_bwd_dul_kernel, state_bwd_grads_kernel,
                    state_bwd_grads_stored_kernel, state_bwd_kernel, state_fwd_kernel, state_fwd_wu_kernel,
                    state_out_kernel, state_seg_carry_kernel, state_wu_kernel)
from .utils import cached, cdiv, chunk_index_tensors, cu_tensor, dot_dtype, env_int, next_pow2, scan_segment_tensors
from .wy import wy_inverse_blocked_kernel, wy_inverse_kernel

L2NORM_EPS = 1e-6


_ENV = env_int


def _state_bwd_mode() -> str:
    """Which C3 backward runs: ``stored`` (default: the forward stores R = V − e^λ K h⁰ and the serial dh walk stores
    dR, so the chunk-parallel gradient kernel splits its key columns over programs without recomputing them;
    fwd+bwd 7.86 → 7.11 ms at (8, 4096, 16, 128) bf16 on an H200, reports/gpu-run-NVIDIA-H200-run5.log),
    ``split`` (serial dh walk + chunk-parallel gradients recomputing U and dR over all K; less memory) or ``fused``
    (one serial kernel; A/B only). Env OSDN_STATE_BWD."""
    mode = os.environ.get("OSDN_STATE_BWD", "stored")
    if mode not in ("split", "stored", "fused"):
        raise ValueError(f"OSDN_STATE_BWD: expected 'split', 'stored' or 'fused', got {mode!r}")
    return mode


def _state_walk_mode(two_product_ok: bool, NH: int) -> str:
    """Which forward state walk runs for NH (sequence, head) pairs (env OSDN_STATE_WALK overrides): ``wu`` for fewer
    than 64 pairs where ``two_product_ok``, else ``full`` (every product of C3 in the walk).

    - ``wu``: the two-product walk (``state_fwd_wu_kernel``): W = M diag(βe^λ) K and u = M diag(β) V for all chunks
      at once (``state_wu_kernel``), the walk's step U = u − W h⁰, h ← e^{λn} h⁰ + (diag(e^{λn−λ}) K̃)ᵀ U, the output
      chunk-parallel (``state_out_kernel``). Only where ``two_product_ok``: the stored gradient kernel then reads U
      and needs R only through Σ_v dR ⊙ R, which it forms from its dR h⁰ᵀ and K when one program takes all key
      columns (16-bit inputs with K <= 128, float32 with K <= 64), or a backward that does not read R; ``full``
      elsewhere. Same-run A/Bs, bf16 (reports/gpu-run-run12-NVIDIA-H200-H100.log): fwd+bwd 6.988 (full) → 6.608 ms at
      (1, 32768, 16, 128) and 5.446 → 5.419 at (2, 16384, 16, 128) on an H200 (call 2); slower where the full walk's
      programs fill the card: 4.114 → 4.375 at (8, 4096, 16, 128), 3.732 → 4.205 at (16, 2048, 32, 64) (call 1).
    - ``lean``: it does only K h⁰, U = M R
    and the state update and ``state_out_kernel`` forms the output for all chunks at once (3 products per serial step
    instead of 6, at the cost of a chunk-parallel kernel and a transient [T, H, V] buffer); it also selects the tiled
    dh walk (``_dh_walk_mode``). Measured no faster (H100, same run, reports/gpu-run-run6-NVIDIA-H200-H100.log call 5):
    forward walk 1.32 → 0.92 ms plus 0.39 ms for the output kernel at (1, 32768, 16, 128), slower at the batched
    shapes; kept as an A/B switch. Holding the state as key tiles in the full forward walk (as the tiled dh walk does)
    gained little: 1.57 → 3.61 / 1.50 ms with 1 / 2 stages (1.46 at 32 value columns), out of shared memory
    with 3, fwd+bwd 11.31 → 11.34 ms at (1, 32768, 16, 128) (H100, run7 log, call 2)."""
    mode = os.environ.get("OSDN_STATE_WALK", "wu" if NH < 64 else "full")
    if mode not in ("full", "lean", "wu"):
        raise ValueError(f"OSDN_STATE_WALK: expected 'full', 'lean' or 'wu', got {mode!r}")
    return "full" if mode == "wu" and not two_product_ok else mode


def _dh_walk_mode(lean: bool, NH: int) -> str:
    """Which serial dh walk the C3 backward runs for NH (sequence, head) pairs (env OSDN_DH_WALK overrides):

    - ``tiles`` (``state_bwd_dh_tiles_kernel``: dh as key tiles of <= 64 rows, two products on the walk's chain, the
      dh-independent factors of dR from the chunk-parallel ``state_bwd_dul_kernel``) when NH < 64 or with
      ``OSDN_STATE_WALK=lean``: few long sequences, where the serial walk dominates. Same-run A/B, bf16, H200
      (reports/gpu-run-run7-NVIDIA-H200-H100.log, call 1): dh walk 2.71 (full) → 1.59 ms (tiles, 2 stages; 2.81 at
      1 stage, 2.36 at 3) at (1, 32768, 16, 128), fwd+bwd 12.03 → 11.21 ms.
    - ``full`` (``state_bwd_dh_kernel``, every product inside the walk) otherwise: with many (sequence, head)
      pairs the walk's programs fill the card and the extra kernel costs more than it saves: fwd+bwd 5.32 (full) vs
      5.65 ms (tiles) at (8, 4096, 16, 128), 4.92 vs 5.02 at (16, 2048, 32, 64) (H200, call 1).
    """
    mode = os.environ.get("OSDN_DH_WALK", "tiles" if lean or NH < 64 else "full")
    if mode not in ("tiles", "full"):
        raise ValueError(f"OSDN_DH_WALK: expected 'tiles' or 'full', got {mode!r}")
    return mode


def walk_segment_length(programs: int, cu_host, BT: int, BK: int, sms: int) -> int:
    """Chunks per segment of the two-level state walks of C3 (0: the plain walks) for a plain walk of ``programs``
    programs (value blocks × sequences × heads), packed offsets ``cu_host``, state chunk BT, padded key size BK and a
    card of ``sms`` multiprocessors.

    The serial walks run one program per (value block, sequence, head): at (1, 32768, 16, 128) 32 programs walk 512
    chunks each on a card of 132 SMs. The two-level walks (the two-product forward walk and the tiled dh walk) cut each
    sequence into segments of LS chunks; a segment pass walks every segment in parallel from 0 (the offset b_s) and the
    identity's columns (the composed map Φ_s, K×K), ``state_seg_carry_kernel`` chains the segments (x ← Φ_s x + b_s) and
    a plain pass from every segment's start state stores what the walk stores. That is three walks' work for the forward
    (value columns twice, the map's K columns once; the dh walk does two, reading the forward's maps transposed,
    ``_dh_maps_source``) spread over many programs, and the walks hold one program an SM, so it pays only where the
    plain walk leaves more than two thirds of the card idle: 3 · programs < sms. Same-run A/Bs, bf16, H200
    (reports/gpu-run-run13-NVIDIA-H200.log): fwd+bwd at (1, 32768, 16, 128) (32 programs) 6.649 → 6.748 / 6.375 / 6.185
    / 6.121 ms with segments of 8 / 16 / 32 / 64 chunks (dh walk 1.556 → 1.227, forward walk 0.763 → 0.489 plus 0.064
    for the carries at 64); at (2, 16384, 16, 128) (64 programs) 5.445 → 6.090 at 32 (calls 1, 2). Default: 64 chunks
    where 3 · programs < sms, BK <= 128 (the serial level holds Φ_s whole) and some sequence has more than 2 · 64
    chunks; env OSDN_WALK_SEG sets LS for any problem (0: off; small values for tests)."""
    if "OSDN_WALK_SEG" in os.environ:
        LS = _ENV("OSDN_WALK_SEG", 0)
    else:
        LS = 64 if 3 * programs < sms else 0
    if LS <= 0 or BK > 128 or len(cu_host) < 2:
        return 0
    max_chunks = -(-int((cu_host[1:] - cu_host[:-1]).max()) // BT)
    return LS if max_chunks > 2 * LS else 0


def _dh_maps_source() -> str:
    """Where the two-level dh walk takes its segment maps (C3 reversed): ``forward`` (default), the forward walk's
    maps transposed, or ``own``, composed by its own segment pass (env OSDN_WALK_DH_MAPS).

    A chunk's state map is affine, h_end = A_c h⁰ + (terms without h⁰) with A_c = e^{λn} I − (diag(e^{λn−λ}) K̃)ᵀ M
    diag(β e^λ) K, and the dh walk's chunk map is its adjoint A_cᵀ; so a segment's dh map A_1ᵀ ⋯ A_nᵀ is the
    transpose of its forward map Φ_s = A_n ⋯ A_1. The forward's two-level walk composes Φ_s anyway; keeping it
    (NS · H · K² float32: 8 MiB at (1, 32768, 16, 128)) spares the dh segment pass its K map columns, half its
    programs there. The forward computes the maps with its own operands (K̃, W = M diag(β e^λ) K) and the dh walk
    with its (P = Mᵀ diag(e^{λn−λ}) K̃, K): equal in exact arithmetic, rounded differently. Same-run A/B on an H200,
    bf16, (1, 32768, 16, 128) (reports/gpu-run-run14-NVIDIA-H200.log, call 1): dh walk 1.155 → 0.915 ms, fwd+bwd
    6.007 → 5.797."""
    mode = os.environ.get("OSDN_WALK_DH_MAPS", "forward")
    if mode not in ("forward", "own"):
        raise ValueError(f"OSDN_WALK_DH_MAPS: expected 'forward' or 'own', got {mode!r}")
    return mode


def _sm_count(device) -> int:
    """Multiprocessors of ``device``'s card (cached); 132 (an H100 or H200 SXM) off the GPU, so that the interpreter
    follows the policies of the cards measured."""
    if device.type != "cuda":
        return 132
    return cached(("sms", device), lambda: torch.cuda.get_device_properties(device).multi_processor_count)


def _seg_carry(maps, offs_b, x0, segs, Xs, xT, N, H, K, V, BK, reverse, dtype, maps_t=False):
    """The serial level of the two-level walks (``state_seg_carry_kernel``): Xs [NS, H, K, V] (the x entering every
    segment) and, with xT, the x leaving each sequence. The maps and offsets are float32; their products in TF32 for
    16-bit inputs (10 mantissa bits, as many as a float16 operand of the walks' own dots keeps: the walks round the
    state to the input dtype at every step) and IEEE float32 for float32 inputs. With float16 inputs the kernel is then
    the one the bfloat16 GPU runs compiled. 32 columns, 4 warps and 2 stages (the next segment's map and offset loaded
    while this one's product runs): carries 0.132 → 0.082 ms against 64 columns, 8 warps, 1 stage at
    (1, 32768, 16, 128), segments of 32 chunks. Its dots are on float32 operands; the 16-bit narrow-dot fault noted in
    ``_value_block`` was not seen with them (run13 log: the benchmarks and the GPU tests of fc24a40). With ``maps_t``
    it reads the maps transposed (the dh walk's level with the forward walk's maps, ``_dh_maps_source``). Env
    OSDN_WALK_CARRY_BV, OSDN_WALK_CARRY_WARPS, OSDN_WALK_CARRY_STAGES, OSDN_WALK_CARRY_PREC."""
    prec = "ieee" if dtype == torch.float32 else "tf32"
    BVC = min(next_pow2(V), _ENV("OSDN_WALK_CARRY_BV", 32))
    state_seg_carry_kernel[(cdiv(V, BVC), N * H)](
        maps, offs_b, x0, segs[2], Xs, xT, H=H, K=K, V=V, BK=BK, BV=BVC, HAS_X0=x0 is not None,
        STORE_XT=xT is not None, REVERSE=reverse, MAPS_T=maps_t, PREC=os.environ.get("OSDN_WALK_CARRY_PREC", prec),
        num_warps=_ENV("OSDN_WALK_CARRY_WARPS", 4), num_stages=_ENV("OSDN_WALK_CARRY_STAGES", 2),
    )


def _dscan_mode() -> str:
    """Which preconditioner scan runs: ``chunk`` (C1, default) or ``token`` (token-serial, env OSDN_DSCAN=token)."""
    mode = os.environ.get("OSDN_DSCAN", "chunk")
    if mode not in ("chunk", "token"):
        raise ValueError(f"OSDN_DSCAN: expected 'chunk' or 'token', got {mode!r}")
    return mode


def dscan_chunking(K: int, BT: int = 64, NH: int = 1, two_level: bool = False):
    """Scan chunk length and warps of the chunk-form d-scan (C1) for key size K, state chunk BT, NH (sequence,
    head) pairs and whether the two-level carry runs at scan chunk 16 (``dscan_plan`` decides it).

    The warps are the chunk-parallel kernels' default; ``dscan_chunk._kernel_warps`` refines them per kernel.
    16 tokens and 2 warps for K <= 64 or when NH >= 64 serial carries run side by side; 32 and 4 for K > 64 with
    few long sequences, where the carry (one step per scan chunk) dominates. From a same-run GPU A/B
    (reports/gpu-run-NVIDIA-H200-run4.log, first call): fwd+bwd at (8, 4096, 16, 128) 7.49 ms at 16 / 2, 7.76 at
    32 / 4, 8.85 at 32 / 8; 16 / 2 best at K = 64; 32 / 4 the default for (1, 32768, 16, 128). Rechecked with the
    prefetching carries (run5 log, call 4): 5.39 ms at 16 / 2 vs 5.82 at 32 / 4 at (8, 4096, 16, 128); 32 / 4 at
    (1, 32768, 16, 128) not remeasured against 16 / 2 in that run. 8 warps, which avoid the register spills an
    offline sm_90 compile shows at 4, were slower. Env OSDN_DSCAN_CHUNK / OSDN_DSCAN_WARPS override them. Never
    longer than the state chunk.

    16 / 2 also where the two-level carry runs (few long sequences, bfloat16): the serial carry no longer dominates,
    and the chunk-parallel kernels are cheaper on 16-token chunks. Same-run A/B on an H200, bf16, (1, 32768, 16, 128)
    (reports/gpu-run-run11-NVIDIA-H200-H100.log, call 2): fwd+bwd 8.006 ms at 32 / 4 → 7.528 at 16 / 2 (M_d 0.25 →
    0.12, write keys 0.21 → 0.15, bwd_pre 0.56 → 0.43, reverse carries 0.31 → 0.23, d-scan backward 0.70 → 0.58;
    the segment walk 0.06 → 0.12).
    """
    small = K <= 64 or NH >= 64 or two_level
    DC = min(BT, _ENV("OSDN_DSCAN_CHUNK", 16 if small else 32))
    DW = _ENV("OSDN_DSCAN_WARPS", 2 if small else 4)
    if DC not in (16, 32, 64, 128):
        raise ValueError(f"OSDN_DSCAN_CHUNK: expected 16, 32, 64 or 128, got {DC}")
    return DC, DW


def dscan_plan(K: int, BT: int, NH: int, cu_host, dtype: torch.dtype):
    """Scan chunk, warps and whether the two-level carry runs (C1) for key size K, state chunk BT, NH (sequence, head)
    pairs, packed offsets ``cu_host`` and inputs of ``dtype``: (DC, DW, two_level). The two-level carry is asked of
    ``scan_segment_length`` at scan chunk 16 (write keys in the 16-bit input dtype, else float32), then
    ``dscan_chunking`` picks the chunk."""
    two_level = scan_segment_length(16, NH, cu_host, _state_store_dtype(dtype)) > 0
    return (*dscan_chunking(K, BT, NH, two_level), two_level)


def _bv(BK: int, V: int) -> int:
    cap = 64 if BK <= 64 else (32 if BK <= 128 else 16)
    return min(next_pow2(V), _ENV("OSDN_BV", cap))


def _value_block(K: int, V: int, DT) -> int:
    """Value columns per program of the state kernels for key size K, value size V and dot operands of dtype DT.

    16-bit tensor-core dots: with value blocks narrower than 64 columns Triton 3.6 on H100 produced an illegal memory
    access (BV = 16) or wrong results (BV = 32, K = 128), and on an H200 an illegal memory access (OSDN_BV16=32,
    reports/gpu-run-NVIDIA-H200-run5.log, call 2), although the same dot shapes alone compute correctly
    (_repro_narrow_dot.py, call 1); blocks of >= 64 are correct (``_key_block``). Env OSDN_BV16 (A/B of narrower
    blocks on a GPU), OSDN_BV."""
    BV = _bv(next_pow2(K), V)
    if DT is not tl.float32:
        BV = _ENV("OSDN_BV16", max(64, BV) if _key_block(K, DT) <= 128 else 64)
    return BV


def _fwd_walk_config(BK: int, BV: int, DT):
    """Value block and pipeline stages of the serial forward walk (C3), from same-run GPU A/Bs on an H100
    (reports/gpu-run-run6-NVIDIA-H200-H100.log, calls 3 and 4):

    - 3 stages for 16-bit inputs with K > 64 (Triton's pipeliner stages the next chunks' loads in shared memory):
      state_fwd 2.27 → 1.55 ms at (1, 32768, 16, 128), 0.52 → 0.49 at (8, 4096, 16, 128); 1 stage at K = 64 (0.39 vs
      0.42 ms at (16, 2048, 32, 64)) and for float32 inputs (measured only in bf16; with 3 stages the float32 GPU
      tests at K = 128 and K = 130 failed for want of shared memory, calls 6, 7). The dh walk stays at 1 (2.71 →
      2.73 / 3.00 ms with 2 / 3 stages).
    - 32-column value blocks (env OSDN_FWD_BV=32) gave 1.56 → 1.31 ms at (1, 32768, 16, 128) and 0.50 → 0.72 at
      (8, 4096, 16, 128) (call 4), but with them for few sequences the GPU tests met an illegal memory access (call
      7; likely the Triton 3.6 narrow-dot fault noted in _chunk_fwd), so the walk keeps the common value block.

    Env OSDN_FWD_BV / OSDN_FWD_STAGES override them."""
    stages = 3 if BK > 64 and DT is not tl.float32 else 1
    return _ENV("OSDN_FWD_BV", BV), _ENV("OSDN_FWD_STAGES", stages)


def _grad_key_block(dtype: torch.dtype) -> int:
    """Key columns per program of the stored-operand gradient kernel (C3 reversed) for inputs of ``dtype``: 128 for
    16-bit inputs, so that at K = 128 one program does a chunk's whole rows, 64 for float32 (whose [BT, 128] float32
    tiles would spill). Chosen by the input dtype, not the dot operands', so that the interpreter (float32 operands)
    runs the GPU's blocks. With 64 at K = 128 the two programs of a chunk each formed U, dS, dA and K K̃ᵀ over all of V
    and K: same-run A/B on an H200, bf16, fwd+bwd 4.723 → 4.273 ms at (8, 4096, 16, 128) (gradient kernel 1.374 →
    0.919; reports/gpu-run-run10-NVIDIA-H200-H100.log, call 2). Blocks stay >= 64 for 16-bit dots (see
    ``_chunk_fwd``). Env OSDN_BWD_GRAD_BKO overrides it."""
    return 128 if dtype in (torch.float16, torch.bfloat16) else 64


def _grad_bko(BK: int, dtype: torch.dtype) -> int:
    """Key columns per program of the stored-operand gradient kernel for padded key size BK (``_grad_key_block``,
    env OSDN_BWD_GRAD_BKO)."""
    return min(BK, _ENV("OSDN_BWD_GRAD_BKO", _grad_key_block(dtype)))


def _wy_stages(dtype: torch.dtype) -> int:
    """Pipeline stages of the blocked UT inverse (C3) for inputs of ``dtype``: 2 for 16-bit inputs (the next key
    block's K, K̃ tiles load while this one's products run), 1 for float32 (not measured). Same-run A/B on an H200, bf16
    (reports/gpu-run-run16-NVIDIA-H200.log, call 7): UT inverse 0.369 → 0.281 ms at (1, 32768, 16, 128) (fwd+bwd
    5.402 → 5.318) and 0.369 → 0.282 at (8, 4096, 16, 128) (3.971 → 3.879), bit-identical. Env OSDN_WY_STAGES."""
    return _ENV("OSDN_WY_STAGES", 2 if dtype in (torch.float16, torch.bfloat16) else 1)


def _grad_stages(DT, V: int, BV: int) -> int:
    """Pipeline stages of the stored-operand gradient kernel (C3 reversed): 2 for 16-bit dots where its value loop
    runs at least twice (V > BV), so that the next value block's dR, dO, h, dh, U tiles load while this one's products
    run; else 1. Same-run A/B on an H200, bf16 (reports/gpu-run-run16-NVIDIA-H200.log, call 6): gradient kernel
    0.897 → 0.858 ms at (1, 32768, 16, 128) (fwd+bwd 5.461 → 5.427) and 0.868 → 0.794 at (8, 4096, 16, 128) (4.058 →
    3.981), bit-identical. Gated with APF (reports/gpu-run-run18-NVIDIA-H100-80GB-HBM3.log, H100, AB_TIME_GATED=1,
    kernels of 583cc05): 1 stage instead of 2 took the kernel 1.906 → 1.850 ms at (8, 4096, 16, 128), 2.118 → 2.116 at
    (16, 2048, 32, 64) and 1.812 → 1.887 at (1, 32768, 16, 128), so 2 stay. There it spilled 656 B a thread at 2 stages
    (offline, Triton 3.6, bf16; 696 with FROM_U); since dL/dg, dβ are formed before the key gradients and those are
    stored one at a time (``_key_grads``) it spills 184 B (272 with FROM_U; 224 / 304 at 1 stage), not yet timed on a
    GPU. Env OSDN_BWD_GRAD_STAGES."""
    return _ENV("OSDN_BWD_GRAD_STAGES", 2 if DT is not tl.float32 and V > BV else 1)


def _two_product_ok(BK: int, dtype: torch.dtype) -> bool:
    """Whether the two-product walk may run for padded key size BK and inputs of ``dtype`` (``_state_walk_mode``): the
    stored gradient kernel takes all key columns in one program (it forms Σ_v dR ⊙ R from them), or the backward
    does not read R."""
    return _state_bwd_mode() != "stored" or _grad_bko(BK, dtype) >= BK


def _key_block(K: int, DT) -> int:
    """Padded key size BK of the state kernels for dot operands of dtype DT: at least 64 for 16-bit dots, whose
    narrower blocks Triton 3.6 mis-compiled (see ``_chunk_fwd``)."""
    return next_pow2(K) if DT is tl.float32 else max(64, next_pow2(K))


def _state_store_dtype(dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of the per-chunk states hbuf and adjoints dhbuf: the input's for 16-bit inputs, else fp32."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32


def _prepare_inputs(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, cu_host):
    _, T, H, K = q.shape
    V = v.shape[-1]
    N = len(cu_host) - 1
    cu = cu_tensor(cu_host, q.device)
    return dict(T=T, H=H, K=K, V=V, N=N, cu=cu, g=g, alpha=alpha, eta=eta.contiguous(),
                d_prior=d_prior.contiguous(), h0=h0, d0=d0)


def _wy_inverse(k, w, beta, g, cu, idx, H, K, BT, BK, DT, PREC, out_dtype=torch.float32):
    """M [1, T, H, BT] = (I + A)^{-1} of every chunk (C3): the 16×16 blocked solve for BT ≤ 64, row by row
    for BT = 128, computed in float32 and stored in ``out_dtype``. ``idx`` [NT, 2] are the (sequence, chunk) pairs
    of :func:`chunk_indices`."""
    M = torch.empty(1, k.shape[1], H, BT, device=k.device, dtype=out_dtype)
    blocked = BT <= 64 and os.environ.get("OSDN_WY", "blocked") != "rows"  # OSDN_WY=rows: A/B benchmarks
    if blocked:
        # float32 operands for the 16×16 tile products: Triton 3.6 on H100 mis-compiled narrow 16-bit dots
        # (see state_fwd below).
        wy_inverse_blocked_kernel[(idx.shape[0], H)](
            k, w, beta, g, cu, idx, M, H=H, K=K, BT=BT, BKC=min(BK, 64), USE_G=g is not None, DT=tl.float32,
            PREC=PREC, num_warps=_ENV("OSDN_WY_WARPS", 2), num_stages=_wy_stages(k.dtype),
        )
    else:
        wy_inverse_kernel[(idx.shape[0], H)](
            k, w, beta, g, cu, idx, M, H=H, K=K, BT=BT, BKC=min(BK, 64), USE_G=g is not None, DT=DT, PREC=PREC,
            num_warps=4, num_stages=1,
        )
    return M


def _chunk_fwd(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, output_final_state,
               chunk_size, store):
    """Run C1–C3 forward. Returns (o [1, T, H, V], h_T, d_T, aux for the backward or None)."""
    P = _prepare_inputs(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, cu_host)
    T, H, K, V, N, cu = P["T"], P["H"], P["K"], P["V"], P["N"], P["cu"]
    BT = int(chunk_size)
    DT = dot_dtype(v.dtype)  # the streamed dtype (q, k are float32 after the in-kernel L2 normalisation)
    BK = _key_block(K, DT)
    BV = _value_block(K, V, DT)
    PREC = "ieee" if v.dtype == torch.float32 else "tf32"
    idx, offs, NT = chunk_index_tensors(cu_host, BT, q.device)
    dev = q.device
    f32 = torch.float32
    # C1/C2: d-scan and write keys
    dT = None
    dsaved = dict(Md=None, Dc=None, idx=None, offs=None, segs=None, Phi=None, clipm=None)
    dprev = None
    DC, DW, _ = dscan_plan(K, BT, N * H, cu_host, v.dtype)
    if _dscan_mode() == "token":
        w = torch.empty(1, T, H, K, device=dev, dtype=f32)
        dprev = torch.empty(1, T, H, K, device=dev, dtype=f32) if store else None
        dT = torch.empty(N, H, K, device=dev, dtype=f32) if output_final_state else None
        dscan_fwd_kernel[(N, H)](
            k, beta, alpha, P["eta"], P["d_prior"], d0, w, dprev, dT, cu, float(d_min), float(d_max),
            H=H, K=K, BK=BK, HAS_ALPHA=alpha is not None, HAS_D0=d0 is not None, STORE_DPREV=store,
            STORE_DT=output_final_state, num_warps=1,
        )
    else:
        # serial work is only the chunk-to-chunk carry; write keys and M_d are built for all chunks at once.
        # The write keys are stored in the 16-bit input dtype for 16-bit inputs (the state kernels' dots round
        # them to it; half the traffic of every kernel that reads them and 128 MiB at (8, 4096, 16, 128))
        w, dsaved, dT, _ = dscan_chunk_forward(
            k, beta, alpha, P["eta"], P["d_prior"], d0, cu, cu_host, d_min, d_max, DC, DW, PREC,
            store_dT=output_final_state, w_dtype=_state_store_dtype(v.dtype), for_backward=store)
    # C3: UT transform per chunk
    # stored in the 16-bit input dtype for 16-bit inputs: every use is a state-kernel dot on M cast to that dtype
    M = _wy_inverse(k, w, beta, g, cu, idx, H, K, BT, BK, DT, PREC, out_dtype=_state_store_dtype(v.dtype))
    # C3: state walk
    o = torch.empty_like(v)
    # chunk-start states for the backward, in the 16-bit input dtype for 16-bit inputs (the backward's dots round
    # them to it anyway; half the memory of float32, as fla stores its h)
    bwd_mode = _state_bwd_mode()
    walk = _state_walk_mode(_two_product_ok(BK, v.dtype), N * H)
    lean, wu = walk == "lean", walk == "wu"
    hbuf = torch.empty(max(NT, 1), H, K, V, device=dev, dtype=_state_store_dtype(v.dtype)) \
        if store or lean or wu else None
    hT = torch.empty(N, H, K, V, device=dev, dtype=f32) if output_final_state else None
    store_vr = store and bwd_mode == "stored" and not wu
    vrbuf = torch.empty(1, T, H, V, device=dev, dtype=_state_store_dtype(v.dtype)) if store_vr else None
    # U for the output kernel (and, after the two-product walk, for the stored backward in place of R), in the dtype
    # of the output's dot
    ubuf = torch.empty(1, T, H, V, device=dev, dtype=f32 if DT is tl.float32 else v.dtype) if lean or wu else None
    BVF, FS = _fwd_walk_config(BK, BV, DT)
    # the two-level walks' segments, for the two-product forward walk and the tiled dh walk where they run
    LSW = walk_segment_length(cdiv(V, BVF) * N * H, cu_host, BT, BK, _sm_count(dev))
    segs_w = scan_segment_tensors(cu_host, BT, LSW, dev) if LSW else None
    maps_w = None  # the forward two-level walk's segment maps, kept for the dh walk
    if wu:
        wk = torch.empty(1, T, H, K, device=dev, dtype=ubuf.dtype)  # W, transient
        if NT > 0:
            state_wu_kernel[(NT * cdiv(V, BV), H)](
                k, v, beta, g, M, wk, ubuf, cu, idx, H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_G=g is not None, DT=DT,
                PREC=PREC, num_warps=_ENV("OSDN_WU_WARPS", 4), num_stages=1,
            )
        fwd_wu = dict(H=H, K=K, V=V, BT=BT, BK=BK, BV=BVF, USE_G=g is not None, DT=DT, PREC=PREC,
                      num_warps=_ENV("OSDN_FWD_WARPS", 4), num_stages=FS)
        if segs_w is not None:
            # two-level walk: every segment's offset and map in parallel, the segments in order, then every segment
            # again from its start state, storing hbuf and U
            segs = segs_w
            cu_s, coff_s, NS = segs[0], segs[1], segs[5]
            # 2 stages (two programs an SM for the segment pass, which fills the card): forward walk 0.488 → 0.451 ms
            # at (1, 32768, 16, 128) against FS = 3 (H200, run14 log, call 1); the plain pass gained nothing at 2
            fwd_wu["num_stages"] = _ENV("OSDN_WALK_SEG_FWD_STAGES", min(FS, 2))
            offs_b = torch.empty(NS, H, K, V, device=dev, dtype=f32)
            maps = torch.empty(NS, H, K, K, device=dev, dtype=f32)
            state_fwd_wu_kernel[(cdiv(V, BVF) + cdiv(K, BVF), NS * H)](
                wk, w, ubuf, g, None, hbuf, offs_b, maps, cu_s, coff_s, HAS_H0=False, STORE_HT=True, MAPS=True,
                **fwd_wu)
            Xs = torch.empty(NS, H, K, V, device=dev, dtype=f32)
            _seg_carry(maps, offs_b, h0, segs, Xs, hT, N, H, K, V, BK, False, v.dtype)
            # the backward's dh walk reads these maps transposed (``_dh_maps_source``)
            maps_w = maps if store and _dh_maps_source() == "forward" else None
            del maps, offs_b
            state_fwd_wu_kernel[(cdiv(V, BVF), NS * H)](
                wk, w, ubuf, g, Xs, hbuf, None, None, cu_s, coff_s, HAS_H0=True, STORE_HT=False, MAPS=False, **fwd_wu)
            del Xs
        else:
            state_fwd_wu_kernel[(cdiv(V, BVF), N * H)](
                wk, w, ubuf, g, h0, hbuf, hT, None, cu, offs, HAS_H0=h0 is not None, STORE_HT=output_final_state,
                MAPS=False, **fwd_wu)
        del wk
    else:
        state_fwd_kernel[(cdiv(V, BVF), N * H)](
            q, k, v, w, beta, g, M, h0, o, hbuf, hT, vrbuf, ubuf, cu, offs, float(scale),
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BVF, USE_G=g is not None, HAS_H0=h0 is not None, STORE_H=store or lean,
            STORE_HT=output_final_state, STORE_VR=store_vr, LEAN=lean, DT=DT, PREC=PREC,
            num_warps=_ENV("OSDN_FWD_WARPS", 4), num_stages=FS,
        )
    if (lean or wu) and NT > 0:
        state_out_kernel[(NT * cdiv(V, BV), H)](
            q, w, beta, g, hbuf, ubuf, o, cu, idx, float(scale), H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_G=g is not None,
            DT=DT, PREC=PREC, LOADS_FIRST=bool(_ENV("OSDN_OUT_LOADS_FIRST", 0)), num_warps=_ENV("OSDN_OUT_WARPS", 4),
            num_stages=1,
        )
    aux = None
    if store:
        aux = dict(q=q, k=k, v=v, beta=beta, g=g, alpha=alpha, eta=P["eta"], d_prior=P["d_prior"], h0=h0, d0=d0,
                   w=w, dprev=dprev, Md=dsaved["Md"], Dc=dsaved["Dc"], idx_d=dsaved["idx"], offs_d=dsaved["offs"],
                   Phi_d=dsaved["Phi"], clipm_d=dsaved["clipm"], M=M, hbuf=hbuf, vrbuf=ubuf if wu else vrbuf, cu=cu,
                   offs=offs, scale=float(scale),
                   d_min=float(d_min), d_max=float(d_max), BT=BT, DC=DC, DW=DW, BK=BK, BV=BV, DT=DT, PREC=PREC, N=N,
                   idx=idx, bwd_mode=bwd_mode, lean=lean, from_u=wu, segs_d=dsaved["segs"], segs_w=segs_w,
                   maps_w=maps_w)
    return o, hT, dT, aux


def _chunk_bwd(aux, do, dhT, ddT):
    """Reverse pass of C3 then of the d-scan. Returns gradients of
    (q, k, v, beta, g, alpha, eta [H], d_prior [H, K], initial_state, initial_precond), None where not needed."""
    q, k, v, beta, g, alpha = (aux[n] for n in ("q", "k", "v", "beta", "g", "alpha"))
    h0, d0 = aux["h0"], aux["d0"]
    _, T, H, K = q.shape
    V = v.shape[-1]
    N, BT, BK, BV = aux["N"], aux["BT"], aux["BK"], aux["BV"]
    NV = cdiv(V, BV)
    dev = q.device
    f32 = torch.float32
    do = do.contiguous()
    if dhT is not None:
        dhT = dhT.contiguous()
    if ddT is not None:
        ddT = ddT.contiguous()
    DT, PREC, USE_G = aux["DT"], aux["PREC"], g is not None
    split = aux["bwd_mode"] != "fused"
    dv = torch.empty(1, T, H, V, device=dev, dtype=v.dtype if split else f32)  # written once, in its final dtype
    dh0 = torch.empty(N, H, K, V, device=dev, dtype=f32)
    if not split:
        # one serial kernel for everything (A/B benchmarks): value blocks add their parts atomically
        alloc = torch.zeros if NV > 1 else torch.empty
        dq = alloc(1, T, H, K, device=dev, dtype=f32)
        dk = alloc(1, T, H, K, device=dev, dtype=f32)
        dw = alloc(1, T, H, K, device=dev, dtype=f32)
        db = alloc(1, T, H, device=dev, dtype=f32)
        dg = alloc(1, T, H, device=dev, dtype=f32) if USE_G else None
        state_bwd_kernel[(NV, N * H)](
            q, k, v, aux["w"], beta, g, aux["M"], aux["hbuf"], do, dhT, aux["cu"], aux["offs"], aux["scale"],
            dq, dk, dw, dv, db, dg, dh0,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_G=USE_G, HAS_DHT=dhT is not None, DT=DT,
            PREC=PREC, ATOMIC=NV > 1, num_warps=_ENV("OSDN_BWD_WARPS", 8), num_stages=_ENV("OSDN_BWD_STAGES", 1),
        )
    else:
        # serial dh walk (dv, dh0 and each chunk's dh), then all chunks in parallel for dq, dk, dK̃, dβ, dg;
        # every row of dq … dg is stored by exactly one program, so no zero-fill and no atomics
        idx = aux["idx"]
        NT = idx.shape[0]
        dq = torch.empty(1, T, H, K, device=dev, dtype=q.dtype)  # written once, in its final dtype
        stored, tiles = aux["bwd_mode"] == "stored", _dh_walk_mode(aux["lean"], N * H) == "tiles"
        # ∂L/∂k of the state part (the d-scan adds its own) and ∂L/∂K̃ (the d-scan's input): in the 16-bit input
        # dtype for 16-bit inputs when the stored-operand kernel writes them and the chunk d-scan reads them (it adds
        # in float32 and rounds dk once more), as fla stores its dk and dw; float32 otherwise (and with OSDN_GRAD16=0)
        gdt = _state_store_dtype(v.dtype) if stored and aux["Md"] is not None and _ENV("OSDN_GRAD16", 1) else f32
        dk = torch.empty(1, T, H, K, device=dev, dtype=gdt)
        dw = torch.empty(1, T, H, K, device=dev, dtype=gdt)
        db = torch.empty(1, T, H, device=dev, dtype=f32)
        dg = torch.empty(1, T, H, device=dev, dtype=f32) if USE_G else None
        dhbuf = torch.empty(max(NT, 1), H, K, V, device=dev, dtype=aux["hbuf"].dtype)  # as large as hbuf
        # dR for the stored-operand gradient kernel; for the tiled walk it first holds Mᵀ scale Sᵀ dO
        drbuf = torch.empty(1, T, H, V, device=dev, dtype=aux["hbuf"].dtype) if stored or tiles else None
        # tiled walk: P = Mᵀ diag(e^{λn−λ}) K̃ [T, H, K] (transient), in the dtype of the walk's dot
        pbuf = torch.empty(1, T, H, K, device=dev, dtype=aux["hbuf"].dtype) if tiles else None
        if tiles and NT > 0:
            state_bwd_dul_kernel[(NT * NV, H)](
                q, aux["w"], beta, g, aux["M"], do, drbuf, pbuf, aux["cu"], idx, aux["scale"], H=H, K=K, V=V, BT=BT,
                BK=BK, BV=BV, USE_G=USE_G, DT=DT, PREC=PREC, LOADS_FIRST=bool(_ENV("OSDN_DUL_LOADS_FIRST", 1)),
                num_warps=_ENV("OSDN_OUT_WARPS", 4), num_stages=1,
            )
        # the dh walk's value block (env: A/B on a GPU). The full walk keeps the common block: at 32 it faulted with an
        # illegal memory access (16-bit dots, Triton 3.6, H100, reports/gpu-run-run6-NVIDIA-H200-H100.log call 4; again
        # on an H200, run8 log call 4). So does the tiled walk, for now: at 32 columns it took 1.597 → 1.312 ms at
        # (1, 32768, 16, 128), bf16, with bit-identical gradients (H200, run8 log call 5; 1.60 → 1.29 on an H100,
        # run7 log call 2), but with it the float16 property of tests/test_fast_chunk.py failed on the H200 (call 6)
        BVD = _ENV("OSDN_DH_BV", BV)
        if tiles:
            # 2 pipeline stages: the next chunk's tiles are staged in shared memory while this one computes
            dh_tiles = dict(H=H, K=K, V=V, BT=BT, BKT=min(BK, 64), BV=BVD, USE_G=USE_G, DT=DT, PREC=PREC,
                            num_warps=_ENV("OSDN_BWD_DH_WARPS", 4), num_stages=_ENV("OSDN_BWD_DH_STAGES", 2),
                            LOADS_FIRST=bool(_ENV("OSDN_DH_LOADS_FIRST", 0)))
            segs = aux["segs_w"]
            if segs is not None:
                # two-level walk (as the forward's): every segment's offset and map from its end, the segments from
                # the last, then every segment again from its dh_end, storing dhbuf, dv and dR
                cu_s, coff_s, NS = segs[0], segs[1], segs[5]
                # 1 stage: the segment passes fill the card, and without the staged loads' shared memory (2 stages)
                # two programs fit an SM: dh walk 1.236 → 1.173 ms at (1, 32768, 16, 128), segments of 32 (run13
                # log, call 2; the forward walk was slower at 1 stage: 0.506 → 0.594)
                dh_tiles["num_stages"] = _ENV("OSDN_WALK_SEG_DH_STAGES", 1)
                # every tile of a chunk loaded before its first product (``state_bwd_dh_tiles_kernel``, LOADS_FIRST): at
                # 1 stage nothing else issues them early. Same-run A/B on an H200, bf16 (reports/gpu-run-run16-NVIDIA-
                # H200.log, call 4): dh walk 0.884 → 0.821 ms, fwd+bwd 5.534 → 5.461 at (1, 32768, 16, 128); the plain
                # tiled walk at 2 stages was slower with it (0.805 → 0.833 at (2, 16384, 16, 128)), so it keeps them
                dh_tiles["LOADS_FIRST"] = bool(_ENV("OSDN_DH_LOADS_FIRST", 1))
                offs_b = torch.empty(NS, H, K, V, device=dev, dtype=f32)
                # the forward's maps transposed where it kept them (``_dh_maps_source``): the segment pass then walks
                # the value columns only (its map blocks, past the value blocks, are not launched; ``maps`` is not
                # written)
                maps = aux.get("maps_w")
                own = maps is None
                if own:
                    maps = torch.empty(NS, H, K, K, device=dev, dtype=f32)
                state_bwd_dh_tiles_kernel[(cdiv(V, BVD) + (cdiv(K, BVD) if own else 0), NS * H)](
                    q, k, pbuf, beta, g, do, None, cu_s, coff_s, aux["scale"], dv, dhbuf, offs_b, drbuf, maps,
                    HAS_DHT=False, MAPS=True, STORE_DH0=True, **dh_tiles)
                Xs = torch.empty(NS, H, K, V, device=dev, dtype=f32)
                _seg_carry(maps, offs_b, dhT, segs, Xs, dh0, N, H, K, V, BK, True, v.dtype, maps_t=not own)
                del maps, offs_b
                state_bwd_dh_tiles_kernel[(cdiv(V, BVD), NS * H)](
                    q, k, pbuf, beta, g, do, Xs, cu_s, coff_s, aux["scale"], dv, dhbuf, dh0, drbuf, None,
                    HAS_DHT=True, MAPS=False, STORE_DH0=False, **dh_tiles)
                del Xs
            else:
                state_bwd_dh_tiles_kernel[(cdiv(V, BVD), N * H)](
                    q, k, pbuf, beta, g, do, dhT, aux["cu"], aux["offs"], aux["scale"], dv, dhbuf, dh0, drbuf, None,
                    HAS_DHT=dhT is not None, MAPS=False, STORE_DH0=True, **dh_tiles)
        else:
            state_bwd_dh_kernel[(cdiv(V, BVD), N * H)](
                q, k, aux["w"], beta, g, aux["M"], do, dhT, aux["cu"], aux["offs"], aux["scale"], dv, dhbuf, dh0, drbuf,
                H=H, K=K, V=V, BT=BT, BK=BK, BV=BVD, USE_G=USE_G, HAS_DHT=dhT is not None, STORE_DR=stored, DT=DT,
                PREC=PREC, num_warps=_ENV("OSDN_BWD_DH_WARPS", 4), num_stages=_ENV("OSDN_BWD_DH_STAGES", 1),
            )
        if NT > 0 and stored:
            BKO = _grad_bko(BK, v.dtype)
            NKB = cdiv(K, BKO)
            dgp = torch.empty(NKB, T, H, device=dev, dtype=f32) if USE_G else None
            state_bwd_grads_stored_kernel[(NT * NKB, H)](
                q, k, v, aux["w"], beta, g, aux["M"], aux["hbuf"], dhbuf, aux["vrbuf"], drbuf, do, aux["cu"], idx,
                aux["scale"], dq, dk, dw, db, dgp, T,
                H=H, K=K, V=V, BT=BT, BV=BV, BKO=BKO, USE_G=USE_G, FROM_U=aux["from_u"], DT=DT, PREC=PREC,
                num_warps=_ENV("OSDN_BWD_GRAD_WARPS", 8), num_stages=_grad_stages(DT, V, BV),
            )
            if USE_G:
                dg = dgp if NKB == 1 else dgp.sum(0, keepdim=True)
        elif NT > 0:
            state_bwd_grads_kernel[(NT, H)](
                q, k, v, aux["w"], beta, g, aux["M"], aux["hbuf"], dhbuf, do, aux["cu"], idx, aux["scale"],
                dq, dk, dw, db, dg,
                H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_G=USE_G, DT=DT, PREC=PREC,
                num_warps=_ENV("OSDN_BWD_GRAD_WARPS", 8), num_stages=_ENV("OSDN_BWD_GRAD_STAGES", 1),
            )
        # free the walk's buffers before the reverse d-scan allocates its own: the peak of a forward+backward fell
        # 2043 → 1914 MiB at (8, 4096, 16, 128) and 2188 → 2059 MiB at (1, 32768, 16, 128), bf16 (H200, run7 log
        # calls 1, 3)
        del dhbuf, drbuf, pbuf
    if aux["Md"] is None:
        dalpha = torch.empty(1, T, H, device=dev, dtype=f32) if alpha is not None else None
        deta = torch.empty(N, H, device=dev, dtype=f32)
        ddp = torch.empty(N, H, K, device=dev, dtype=f32)
        dd0 = torch.empty(N, H, K, device=dev, dtype=f32)
        dscan_bwd_kernel[(N, H)](
            k, beta, alpha, aux["eta"], aux["d_prior"], aux["dprev"], dw, ddT, aux["cu"], aux["d_min"], aux["d_max"],
            dk, db, dalpha, deta, ddp, dd0,
            H=H, K=K, BK=BK, HAS_ALPHA=alpha is not None, HAS_DDT=ddT is not None, num_warps=1,
        )
    else:
        saved = dict(Md=aux["Md"], Dc=aux["Dc"], idx=aux["idx_d"], offs=aux["offs_d"], segs=aux["segs_d"],
                     Phi=aux["Phi_d"], clipm=aux["clipm_d"], w=aux["w"])
        # the d-scan's last kernel writes ∂L/∂k and ∂L/∂β in their input dtypes (one rounding of the float32 sums),
        # instead of a float32 read-modify-write followed by a cast
        dk_out = dk if dk.dtype == k.dtype else torch.empty(1, T, H, K, device=dev, dtype=k.dtype)
        db_out = db if beta.dtype == f32 else torch.empty(1, T, H, device=dev, dtype=beta.dtype)
        dalpha, deta, ddp, dd0 = dscan_chunk_backward(
            k, beta, alpha, aux["eta"], aux["d_prior"], saved, dw, ddT, aux["cu"], N, aux["d_min"], aux["d_max"],
            aux["DC"], aux["DW"], aux["PREC"], dk, db, dk_out, db_out)
        dk, db = dk_out, db_out
    d_dp = ddp.sum(0)
    if d0 is None:
        d_dp = d_dp + dd0.sum(0)
    return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), db.to(beta.dtype),
            None if g is None else dg.to(g.dtype), None if alpha is None else dalpha.to(alpha.dtype),
            deta.sum(0), d_dp, None if h0 is None else dh0.to(h0.dtype), None if d0 is None else dd0.to(d0.dtype))


# tensors the forward saves for the backward, by their names in ``_chunk_fwd``'s aux (None where not used)
_SAVED = ("q", "k", "v", "beta", "g", "alpha", "eta", "d_prior", "h0", "d0", "w", "dprev", "Md", "Dc", "idx_d",
          "offs_d", "Phi_d", "clipm_d", "M", "hbuf", "vrbuf", "cu", "offs", "idx", "maps_w")


class ChunkOSDNFunction(torch.autograd.Function):
    """Triton forward and backward of C1–C3 on packed inputs [1, T, H, *]."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, output_final_state,
                chunk_size):
        store = any(ctx.needs_input_grad[:10])
        o, hT, dT, aux = _chunk_fwd(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host,
                                    output_final_state, chunk_size, store)
        if store:
            ctx.save_for_backward(*(aux[n] for n in _SAVED))
            ctx.meta = {n: aux[n] for n in ("scale", "d_min", "d_max", "BT", "DC", "DW", "BK", "BV", "DT", "PREC", "N",
                                             "bwd_mode", "lean", "from_u", "segs_d", "segs_w")}
        return o, hT, dT

    @staticmethod
    def run(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host, output_final_state,
            chunk_size):
        """The forward without autograd (nothing requires a gradient)."""
        return _chunk_fwd(q, k, v, beta, g, alpha, eta, d_prior, h0, d0, scale, d_min, d_max, cu_host,
                          output_final_state, chunk_size, False)[:3]

    @staticmethod
    def backward(ctx, do, dhT, ddT):
        aux = dict(zip(_SAVED, ctx.saved_tensors))
        aux.update(ctx.meta)
        return _chunk_bwd(aux, do, dhT, ddT) + (None,) * 6


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(‖x‖² + 1e-6) in float32 (spec §2), kept in float32: rounding the unit vectors back to 16 bits
    would perturb ‖k‖² and with it the learner's step E8."""
    xf = x.float()
    return xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True) + L2NORM_EPS)


def _finish(fn, q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond, output_final_state,
            d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens, chunk_size):
    """Validate (spec §6), apply defaults, pack, run ``fn`` and unpack. Shared by both entry points.

    Every check of :func:`~osdn_fast.validation.validate` runs first, before anything else. The [B, T] batch is
    viewed as B packed sequences ([1, B·T, H, ·]) for the autograd path and for ``fn.run`` unless ``fn`` says
    (``run_takes_batched``) that its no-gradient run reads any contiguous [B, T, H, ·] tensor as packed rows:
    then the inputs go as they are (``.contiguous()`` only, a no-op when they already are) and the output is
    not reshaped back, which saves a view per tensor on every decoding step.
    """
    val = validate(q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond, d_min, d_max,
                   cu_seqlens)
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"chunk_size: expected 16, 32, 64 or 128, got {chunk_size}")
    dims = val.dims
    B, T, H, K, V = dims.B, dims.T, dims.H, dims.K, dims.V
    scale = K ** -0.5 if scale is None else float(scale)
    d_max = float("inf") if d_max is None else float(d_max)
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    dev, f32 = val.device, torch.float32
    if val.eta_is_tensor:
        eta_h = (eta.reshape(-1).to(f32).expand(H) if eta.numel() == 1 else eta.to(f32)).contiguous()
    else:
        eta_h = cached(("eta", dev, H, float(eta)), lambda: torch.full((H,), float(eta), device=dev, dtype=f32))
    if d_prior is None:
        dp = cached(("ones", dev, H, K), lambda: torch.ones(H, K, device=dev, dtype=f32))
    else:
        dp = d_prior.to(f32).contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()
    d0 = None if initial_precond is None else initial_precond.contiguous()
    grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, g, alpha, eta_h, dp, h0, d0))
    batched = not grad and getattr(fn, "run_takes_batched", False)

    def pack(x, last):
        if x is None:
            return None
        return x.contiguous() if batched else x.reshape((1, B * T, H) + last).contiguous()

    args = (pack(q, (K,)), pack(k, (K,)), pack(v, (V,)), pack(beta, ()), pack(g, ()), pack(alpha, ()), eta_h, dp,
            h0, d0, scale, float(d_min), d_max, val.cu_host, bool(output_final_state), int(chunk_size))
    if grad:
        o, hT, dT = fn.apply(*args)
    else:  # nothing to differentiate (e.g. decoding under no_grad): no autograd node, no saved tensors
        o, hT, dT = fn.run(*args)
    if not batched:
        o = o.reshape(B, T, H, V)
    if not output_final_state:
        return o, None, None
    return o, hT, dT


def chunk_osdn(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None, use_qk_l2norm_in_kernel=False,
    cu_seqlens=None, chunk_size: int = 64,
):
    """OSDN in chunkwise form (spec C1–C3, §6), Triton forward and backward.

    Parameters
    ----------
    q, k : Tensor [B, T, H, K]; v : Tensor [B, T, H, V]
        float32, float16 or bfloat16; K, V ≤ 256.
    beta : Tensor [B, T, H]
        Write strengths β_t (E5).
    g : Tensor [B, T, H], optional
        Log-decays g_t ≤ 0 (γ_t = e^{g_t}, E4/E5).
    alpha : Tensor [B, T, H], optional
        APF gates α_t ∈ [0, 1] (E1); 0 is a hard reset to d°.
    eta : float or Tensor [] / [H]
        Hyper step η ≥ 0 of E8 (gradients flow to a tensor).
    d_prior : Tensor [H, K], optional
        Prior d° (E1); default ones.
    scale : float, optional
        Output scale of E6; default K^(-1/2).
    initial_state : Tensor [N, H, K, V], optional
        h_0 = S_0ᵀ.
    initial_precond : Tensor [N, H, K], optional
        d_0; default d°.
    output_final_state : bool
        Also return (h_T, d_T), float32.
    d_min, d_max : float
        Clip bounds of E2 (d_max None: +∞).
    use_qk_l2norm_in_kernel : bool
        Replace q, k by x / sqrt(‖x‖² + 1e-6) first (inside the differentiated computation).
    cu_seqlens : int32/int64 Tensor [N + 1], optional
        Packed sequences (B = 1).
    chunk_size : int
        Chunk length C of C1–C3 (16, 32, 64 or 128).

    Returns
    -------
    o : Tensor [B, T, H, V], dtype of v (E6)
    final_state : float32 [N, H, K, V] or None
    final_precond : float32 [N, H, K] or None
    """
    return _finish(ChunkOSDNFunction, q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond,
                   output_final_state, d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens, chunk_size)
