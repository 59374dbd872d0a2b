"""Small helpers shared by the OSDN kernels: dot precision, chunk indices of packed sequences."""

from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    return max(lo, triton.next_power_of_2(int(x)))
