"""Input validation of the spec §6 contract, shared by the reference and the fast path.

Every check raises before any computation runs, names the argument, says what was expected and
what came. The functions here only read ``.shape``, ``.ndim`` and ``.dtype`` (and, for the
reference, values of small host arrays), so the same code serves NumPy arrays and torch tensors;
``osdn_fast`` adds its own device and dtype checks on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np

__all__ = ["Dims", "check_shapes", "check_cu_seqlens_values", "check_scalars"]


@dataclass(frozen=True)
class Dims:
    """Problem dimensions read off validated inputs.

    ``N`` is the number of sequences: ``B`` without ``cu_seqlens``, ``len(cu_seqlens) - 1`` with it.
    """

    B: int
    T: int
    H: int
    K: int
    V: int
    N: int


def _shape(name: str, x: Any) -> tuple:
    """``x.shape`` as a plain tuple of ints.

    torch.Size and NumPy shapes already are tuples of ints and are only copied (``tuple(s)``, a third of the
    per-element ``int`` conversion's cost: these checks run on every decoding step of the fast path).
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name}: expected an array or tensor, got {type(x).__name__}")
    if isinstance(shape, tuple):
        return tuple(shape)
    return tuple(int(s) for s in shape)


def _expect(name: str, x: Any, expected: tuple, layout: str) -> None:
    got = _shape(name, x)
    if got == expected:
        return
    if len(got) != len(expected):
        raise ValueError(
            f"{name}: expected rank {len(expected)} with shape {layout} = {expected}, "
            f"got rank {len(got)} with shape {got}"
        )
    raise ValueError(f"{name}: expected shape {layout} = {expected}, got {got}")


@lru_cache(maxsize=256)
def _dims(B: int, T: int, H: int, K: int, V: int, N: int) -> Dims:
    """One shared (frozen, so shareable) :class:`Dims` per shape: building a frozen dataclass costs a few µs."""
    return Dims(B=B, T=T, H=H, K=K, V=V, N=N)


def check_shapes(
    q: Any,
    k: Any,
    v: Any,
    beta: Any,
    g: Any = None,
    alpha: Any = None,
    eta: Any = None,
    d_prior: Any = None,
    initial_state: Any = None,
    initial_precond: Any = None,
    cu_seqlens: Any = None,
) -> Dims:
    """Check ranks and shapes of every input of E1–E8 against q (spec §1, §6) and return the dimensions.

    q, k, v feed E3–E6; beta E5, E7; g (γ = exp g) E4, E5; alpha E1; eta E8; d_prior E1; the initial
    state and preconditioner are S_0 and d_0 of the recurrence.

    Parameters
    ----------
    q, k : [B, T, H, K]
    v : [B, T, H, V]
    beta, g, alpha : [B, T, H]
    eta : scalar or [H]
    d_prior : [H, K]
    initial_state : [N, H, K, V]
    initial_precond : [N, H, K]
    cu_seqlens : [N + 1], only with B = 1

    Returns
    -------
    Dims
    """
    qs = _shape("q", q)
    if len(qs) != 4:
        raise ValueError(f"q: expected rank 4 with shape [B, T, H, K], got rank {len(qs)} with shape {qs}")
    B, T, H, K = qs
    if T < 1:
        raise ValueError(f"q: expected T >= 1 tokens, got T = {T}")
    if K < 1 or H < 1 or B < 1:
        raise ValueError(f"q: expected positive B, H and K, got shape {qs}")
    _expect("k", k, (B, T, H, K), "[B, T, H, K]")
    vs = _shape("v", v)
    if len(vs) != 4:
        raise ValueError(f"v: expected rank 4 with shape [B, T, H, V], got rank {len(vs)} with shape {vs}")
    if vs[:3] != (B, T, H):
        raise ValueError(f"v: expected shape [B, T, H, V] with B, T, H = {(B, T, H)} (from q), got {vs}")
    V = vs[3]
    if V < 1:
        raise ValueError(f"v: expected V >= 1, got shape {vs}")
    _expect("beta", beta, (B, T, H), "[B, T, H]")
    if g is not None:
        _expect("g", g, (B, T, H), "[B, T, H]")
    if alpha is not None:
        _expect("alpha", alpha, (B, T, H), "[B, T, H]")
    if eta is not None and hasattr(eta, "shape"):
        es = _shape("eta", eta)
        if es not in ((), (1,), (H,)):
            raise ValueError(f"eta: expected a scalar or shape [H] = ({H},), got {es}")
    if d_prior is not None:
        _expect("d_prior", d_prior, (H, K), "[H, K]")
    N = B
    if cu_seqlens is not None:
        cs = _shape("cu_seqlens", cu_seqlens)
        if len(cs) != 1 or cs[0] < 2:
            raise ValueError(f"cu_seqlens: expected shape [N + 1] with N >= 1, got {cs}")
        if B != 1:
            raise ValueError(f"cu_seqlens: packed sequences need B = 1, got B = {B} (q has shape {qs})")
        N = cs[0] - 1
    if initial_state is not None:
        _expect("initial_state", initial_state, (N, H, K, V), "[N, H, K, V]")
    if initial_precond is not None:
        _expect("initial_precond", initial_precond, (N, H, K), "[N, H, K]")
    return _dims(B, T, H, K, V, N)


def check_cu_seqlens_values(cu_seqlens: Any, T: int) -> np.ndarray:
    """Check the values of ``cu_seqlens`` (spec §6) and return them as an int64 NumPy array.

    They must be integers, start at 0, never decrease and end at T. Each packed sequence runs E1–E8 from
    its own initial (state, preconditioner); packed equals separate runs (T1).
    """
    arr = np.asarray(cu_seqlens.detach().cpu() if hasattr(cu_seqlens, "detach") else cu_seqlens)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"cu_seqlens: expected an int32 or int64 array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr[0] != 0:
        raise ValueError(f"cu_seqlens: expected to start at 0, got {arr[0]} (cu_seqlens = {arr.tolist()})")
    if np.any(np.diff(arr) < 0):
        raise ValueError(f"cu_seqlens: expected non-decreasing offsets, got {arr.tolist()}")
    if arr[-1] != T:
        raise ValueError(f"cu_seqlens: expected to end at T = {T}, got {arr[-1]} (cu_seqlens = {arr.tolist()})")
    return arr


def check_scalars(d_min: float, d_max: Optional[float], eta_min: Optional[float], scale: Optional[float]) -> None:
    """Check the clip bounds of E2 (d_min ≤ d_max), the smallest hyper step η ≥ 0 of E8 and the output
    scale of E6 (spec §1, §6).

    ``eta_min`` is the smallest entry of eta (None where it cannot be read without a device sync).
    NaN bounds or steps are rejected: they are configuration, not data.
    """
    # math.isfinite / math.isnan on float(x): the same tests as NumPy's on a python float, without NumPy's
    # per-call dispatch (about 1 µs each).
    if d_min is None or not math.isfinite(float(d_min)) and float(d_min) != -math.inf:
        raise ValueError(f"d_min: expected a real number or -inf, got {d_min!r}")
    if d_max is not None:
        if math.isnan(float(d_max)):
            raise ValueError(f"d_max: expected a real number, +inf or None, got {d_max!r}")
        if float(d_min) > float(d_max):
            raise ValueError(f"d_min, d_max: expected d_min <= d_max, got d_min = {d_min} > d_max = {d_max}")
    if eta_min is not None:
        if math.isnan(eta_min):
            raise ValueError(f"eta: expected eta >= 0, got NaN")
        if eta_min < 0:
            raise ValueError(f"eta: expected eta >= 0, got a value of {eta_min}")
    if scale is not None and not math.isfinite(float(scale)):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
