"""Small helpers shared by the OSDN kernels: dot precision, chunk indices of packed sequences."""

from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def env_int(name: str, default: int) -> int:
    """An integer kernel setting from the environment (A/B switches such as OSDN_DSCAN_CHUNK), else ``default``."""
    return int(os.environ.get(name, default))


def maxnreg(name: str, default: int = 0) -> dict:
    """Launch option capping a kernel's registers a thread: env ``name``, else ``default`` (0: no cap)."""
    n = env_int(name, default)
    return {"maxnreg": n} if n else {}


def dot_dtype(dtype: torch.dtype):
    """Operand dtype of tl.dot for inputs of ``dtype``: the input's own on a GPU for fp16/bf16, else fp32.

    The Triton interpreter computes bf16 dots wrongly, so it always gets float32 operands.
    """
    if INTERPRET or dtype == torch.float32:
        return tl.float32
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float16


def chunk_indices(cu_host: np.ndarray, BT: int):
    """Chunks of the packed sequences (spec §4): (sequence n, chunk c) per global chunk, and per-sequence offsets.

    Returns
    -------
    idx : int32 [NT, 2]   (n, c) of every chunk, sequences in order
    offs : int32 [N + 1]  index of sequence n's first chunk in ``idx``
    """
    lens = np.diff(cu_host)
    nts = (lens + BT - 1) // BT
    offs = np.concatenate([[0], np.cumsum(nts)]).astype(np.int32)
    idx = np.zeros((int(offs[-1]), 2), dtype=np.int32)
    for n, nt in enumerate(nts):
        idx[offs[n]:offs[n + 1], 0] = n
        idx[offs[n]:offs[n + 1], 1] = np.arange(nt)
    return idx, offs


def next_pow2(x: int, lo: int = 16) -> int:
    """The smallest power of two >= x, at least ``lo`` (a block size). Plain Python: the host-side drivers run once per
    call, and ``triton.next_power_of_2`` / ``triton.cdiv`` called from Python go through Triton's function wrapper
    (about 13 µs a call on the CI machine, three calls of a decoding step's 150 µs of host time)."""
    x = int(x)
    return max(lo, 1 if x <= 1 else 1 << (x - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for positive ints (host side; see :func:`next_pow2`)."""
    return -(-int(a) // int(b))


_CACHE: "OrderedDict[tuple, object]" = None  # filled on first use


def cached(key: tuple, make):
    """Small LRU cache (256 entries) of read-only device constants: cu_seqlens offsets, chunk indices, the
    default d° = 1 and η filled from a python float. Decoding calls the kernels once per token; rebuilding
    these (host→device copies, fills) was most of a decoding step's time. Callers never write into them.
    Keys hold the ``torch.device`` itself (hashable), not ``str(device)``: formatting it costs about 1 µs."""
    global _CACHE
    if _CACHE is None:
        from collections import OrderedDict
        _CACHE = OrderedDict()
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    val = make()
    _CACHE[key] = val
    if len(_CACHE) > 256:
        _CACHE.popitem(last=False)
    return val


def cu_tensor(cu_host: np.ndarray, device) -> torch.Tensor:
    """int32 device copy of the packed offsets ``cu_host`` (cached)."""
    return cached(("cu", device, cu_host.tobytes()),
                  lambda: torch.as_tensor(cu_host.astype(np.int32), device=device))  # a copy: cu_host may be read-only


def chunk_index_tensors(cu_host: np.ndarray, BT: int, device):
    """Device copies of :func:`chunk_indices` (cached): (idx [NT, 2], offs [N + 1], NT)."""
    def make():
        idx, offs = chunk_indices(cu_host, BT)
        return torch.as_tensor(idx, device=device), torch.as_tensor(offs, device=device), idx.shape[0]
    return cached(("chunks", device, BT, cu_host.tobytes()), make)


def scan_segments(cu_host: np.ndarray, C: int, LS: int):
    """Segments of at most ``LS`` chunks of ``C`` tokens of the packed sequences (spec §4), for the two-level carry of
    the d-scan (C1).

    Every sequence gets at least one segment (an empty sequence one empty segment); segments are whole chunks, so a
    segment's chunks are the sequence's chunks and keep their global chunk indices (:func:`chunk_indices`).

    Returns
    -------
    cu_seg : int32 [NS + 1]   token offsets of the segments (contiguous, like ``cu_seqlens``)
    coff_seg : int32 [NS + 1] global index of each segment's first chunk (the last entry: the number of chunks)
    seg_ptr : int32 [N + 1]   index of sequence n's first segment
    """
    lens = np.diff(cu_host)
    nts = (lens + C - 1) // C
    offs = np.concatenate([[0], np.cumsum(nts)])
    cu_seg, coff_seg, seg_ptr = [], [], [0]
    for n, nt in enumerate(nts):
        ns = max(1, -(-int(nt) // LS))
        for s in range(ns):
            cu_seg.append(int(cu_host[n]) + s * LS * C)
            coff_seg.append(int(offs[n]) + s * LS)
        seg_ptr.append(seg_ptr[-1] + ns)
    cu_seg.append(int(cu_host[-1]))
    coff_seg.append(int(offs[-1]))
    return (np.asarray(cu_seg, dtype=np.int32), np.asarray(coff_seg, dtype=np.int32),
            np.asarray(seg_ptr, dtype=np.int32))


def scan_segment_tensors(cu_host: np.ndarray, C: int, LS: int, device):
    """Device copies of :func:`scan_segments` (C1's two-level carry; cached) and the segment counts: (cu_seg,
    coff_seg, seg_ptr, first [N] (each sequence's first segment), last [N] (its last), NS)."""
    def make():
        cu_seg, coff_seg, seg_ptr = scan_segments(cu_host, C, LS)
        t = [torch.as_tensor(x, device=device) for x in (cu_seg, coff_seg, seg_ptr)]
        first = torch.as_tensor(seg_ptr[:-1].astype(np.int64), device=device)
        last = torch.as_tensor(seg_ptr[1:].astype(np.int64) - 1, device=device)
        return (*t, first, last, len(cu_seg) - 1)
    return cached(("segments", device, C, LS, cu_host.tobytes()), make)
