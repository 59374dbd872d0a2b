"""Input validation of the fast path (spec §6), shared by ``chunk_osdn`` and ``fused_recurrent_osdn``.

Builds on :mod:`osdn_ref.checks` (ranks, shapes, cu_seqlens values, scalar bounds) and adds what only
the torch path needs: every tensor a ``torch.Tensor`` on one device, floating dtypes only
(float32/float16/bfloat16 for the streamed inputs q, k, v, beta, g, alpha), an integer cu_seqlens.
Everything here runs before any kernel launches and raises an error that names the argument.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np
import torch

from osdn_ref.checks import Dims, check_cu_seqlens_values, check_scalars, check_shapes

__all__ = ["Validated", "validate", "STREAM_DTYPES"]

STREAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLOAT_DTYPES = STREAM_DTYPES + (torch.float64,)


@dataclass
class Validated:
    """What validation learnt (spec §6 inputs of E1–E8): dimensions, cu_seqlens offsets on the host, eta's form."""

    dims: Dims
    cu_host: np.ndarray  # int64 [N + 1]: offsets of the packed form (B sequences of T without cu_seqlens)
    eta_is_tensor: bool
    device: torch.device


@lru_cache(maxsize=256)
def _packed_offsets(B: int, T: int) -> np.ndarray:
    """Offsets [0, T, 2T, …, BT] of B sequences of T tokens viewed as packed (cached per (B, T), read-only).

    Every decoding step asks for the same one; callers only read it (``np.diff``, ``tobytes``, device copies).
    """
    cu = np.arange(B + 1, dtype=np.int64) * T
    cu.flags.writeable = False
    return cu


def _tensor(name: str, x: Any, dtypes=STREAM_DTYPES) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        want = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: expected dtype in ({want}), got {str(x.dtype).replace('torch.', '')}")


# η tensors that passed the value check (E8: η ≥ 0, no NaN), by id: a weak reference to the tensor, its in-place
# version counter when checked and its minimum. A decoding loop that passes the same unmodified η every token so copies
# it to the host (a device sync for a CUDA tensor) once, not once a token. Inference tensors keep no version counter
# and are read every time. Writes that bypass the version counter (through ``.data`` or a NumPy view of a CPU tensor)
# are not seen: a tensor changed that way after its check is not checked again.
_ETA_PASSED: dict = {}


def _eta_read(eta: torch.Tensor) -> float:
    """min η over its entries on the host (NaN if any entry is NaN): a device sync for a CUDA tensor."""
    e = eta.detach().to("cpu", torch.float64)
    return float("nan") if torch.isnan(e).any() else float(e.min())


def _eta_min(eta: torch.Tensor) -> float:
    """What the value check of E8 needs of a tensor η: its minimum, read on the host, or remembered for the very
    tensor (same object, not modified in place since) that passed the check before (``_ETA_PASSED``)."""
    try:
        version = eta._version
    except RuntimeError:  # an inference tensor (or a wrapper) without a version counter
        return _eta_read(eta)
    key = id(eta)
    seen = _ETA_PASSED.get(key)
    if seen is not None and seen[0]() is eta and seen[1] == version:
        return seen[2]
    m = _eta_read(eta)
    if m >= 0:  # False for NaN
        _ETA_PASSED[key] = (weakref.ref(eta, lambda _, key=key, d=_ETA_PASSED: d.pop(key, None)), version, m)
    return m


def validate(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, d_min=0.0, d_max=None, cu_seqlens=None,
) -> Validated:
    """Check every argument of the spec §6 API before any kernel runs.

    Parameters
    ----------
    q, k : Tensor [B, T, H, K]; v : Tensor [B, T, H, V]; beta, g, alpha : Tensor [B, T, H]
        float32, float16 or bfloat16.
    eta : float or Tensor [] / [1] / [H]
        Hyper step η ≥ 0 of E8.
    d_prior : Tensor [H, K]; initial_state : Tensor [N, H, K, V]; initial_precond : Tensor [N, H, K]
        Any floating dtype (float64 included).
    d_min, d_max : float
        Clip bounds of E2, d_min ≤ d_max.
    cu_seqlens : integer Tensor [N + 1], optional
        Packed offsets (B = 1): start at 0, non-decreasing, end at T.

    Returns
    -------
    Validated

    Raises
    ------
    TypeError, ValueError
        Naming the argument, what was expected and what came.
    """
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        _tensor(name, x)
    if g is not None:
        _tensor("g", g)
    if alpha is not None:
        _tensor("alpha", alpha)
    if d_prior is not None:
        _tensor("d_prior", d_prior, _FLOAT_DTYPES)
    if initial_state is not None:
        _tensor("initial_state", initial_state, _FLOAT_DTYPES)
    if initial_precond is not None:
        _tensor("initial_precond", initial_precond, _FLOAT_DTYPES)
    eta_is_tensor = isinstance(eta, torch.Tensor)
    if eta_is_tensor:
        _tensor("eta", eta, _FLOAT_DTYPES)
    elif isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating, np.integer)):
        raise TypeError(f"eta: expected a python float or a tensor of shape [] or [H], got {type(eta).__name__}")
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise TypeError(f"cu_seqlens: expected an int32 or int64 torch.Tensor, got {type(cu_seqlens).__name__}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens: expected dtype int32 or int64, got {str(cu_seqlens.dtype).replace('torch.', '')}")
    dims = check_shapes(q, k, v, beta, g, alpha, eta if eta_is_tensor else None, d_prior, initial_state,
                        initial_precond, cu_seqlens)
    device = q.device
    for name, x in (("k", k), ("v", v), ("beta", beta), ("g", g), ("alpha", alpha), ("d_prior", d_prior),
                    ("initial_state", initial_state), ("initial_precond", initial_precond),
                    ("eta", eta if eta_is_tensor else None), ("cu_seqlens", cu_seqlens)):
        if x is not None and x.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} (the device of q), got one on {x.device}")
    if eta_is_tensor:
        # The value check (η ≥ 0, E8) must raise before any launch, so a CUDA eta is copied to the host: a device
        # sync, done once per tensor and in-place version (``_eta_min``). A python-float eta costs nothing here.
        eta_min = _eta_min(eta)
    else:
        eta_min = float(eta)
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"q: expected a CUDA tensor (the Triton kernels run on a GPU; set TRITON_INTERPRET=1 "
                         f"before importing osdn_fast to use the interpreter on the CPU), got one on {device}")
    check_scalars(d_min, d_max, eta_min, scale)
    if cu_seqlens is not None:
        cu_host = check_cu_seqlens_values(cu_seqlens, dims.T)
    else:
        cu_host = _packed_offsets(dims.B, dims.T)
    if dims.K > 256:
        raise ValueError(f"q: the fast path supports head dimension K <= 256, got K = {dims.K}")
    if dims.V > 256:
        raise ValueError(f"v: the fast path supports value dimension V <= 256, got V = {dims.V}")
    return Validated(dims=dims, cu_host=cu_host, eta_is_tensor=eta_is_tensor, device=device)
