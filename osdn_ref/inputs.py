"""Validation, defaults and float64 conversion shared by every reference form (spec §1, §2, §6).

:func:`prepare` is the single entry through which the recurrent, chunkwise, VJP and high-precision
forms read their arguments, so they cannot disagree about defaults. It copies every input into a
fresh float64 array: the caller's arrays are never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .checks import Dims, check_cu_seqlens_values, check_scalars, check_shapes

__all__ = ["Prepared", "prepare", "l2norm", "L2NORM_EPS", "segments"]

L2NORM_EPS = 1e-6


def l2norm(x: np.ndarray) -> np.ndarray:
    """x / sqrt(‖x‖² + 1e-6) over the last axis (spec §2, use_qk_l2norm_in_kernel): applied to q and k
    before they enter E3, E4, E6 and E7."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + L2NORM_EPS)


def _as_float64(name: str, x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: read it, never alias it
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real floating-point array, got dtype {arr.dtype}")
    return np.array(arr, dtype=np.float64, copy=True)


@dataclass
class Prepared:
    """Float64 copies of the inputs with every default applied.

    q, k are the keys as used (after the optional L2 normalisation); q_raw, k_raw as given.
    """

    dims: Dims
    q: np.ndarray  # [B, T, H, K]
    k: np.ndarray  # [B, T, H, K]
    q_raw: np.ndarray
    k_raw: np.ndarray
    v: np.ndarray  # [B, T, H, V]
    beta: np.ndarray  # [B, T, H]
    g: np.ndarray  # [B, T, H]
    alpha: np.ndarray  # [B, T, H]
    eta: np.ndarray  # [H]
    eta_is_scalar: bool
    d_prior: np.ndarray  # [H, K]
    scale: float
    h0: np.ndarray  # [N, H, K, V]
    d0: np.ndarray  # [N, H, K]
    d_min: float
    d_max: float
    use_qk_l2norm: bool
    cu_seqlens: Optional[np.ndarray]  # int64 [N + 1] or None
    has_g: bool
    has_alpha: bool
    has_d_prior: bool
    has_initial_precond: bool


def segments(prep: Prepared):
    """Yield (n, b, t0, t1): sequence n lives in batch row b, tokens [t0, t1).

    Each sequence runs E1–E8 from its own (S_0, d_0); with cu_seqlens this is the packing of T1.
    """
    if prep.cu_seqlens is None:
        for b in range(prep.dims.B):
            yield b, b, 0, prep.dims.T
    else:
        cs = prep.cu_seqlens
        for n in range(len(cs) - 1):
            yield n, 0, int(cs[n]), int(cs[n + 1])


def prepare(
    q,
    k,
    v,
    beta,
    g=None,
    alpha=None,
    eta=1.0,
    d_prior=None,
    scale=None,
    initial_state=None,
    initial_precond=None,
    d_min=0.0,
    d_max=None,
    use_qk_l2norm_in_kernel=False,
    cu_seqlens=None,
) -> Prepared:
    """Validate (spec §6) and convert the arguments of any reference form (E1–E8, C1–C3) to float64 with
    every default applied (g = 0, α = 1, d° = 1, S_0 = 0, d_0 = d°, scale = K^(-1/2)); see
    :func:`osdn_ref.recurrent_osdn`."""
    dims = check_shapes(q, k, v, beta, g, alpha, eta if hasattr(eta, "shape") else None, d_prior,
                        initial_state, initial_precond, cu_seqlens)
    B, T, H, K, V, N = dims.B, dims.T, dims.H, dims.K, dims.V, dims.N
    names = dict(q=q, k=k, v=v, beta=beta)
    arrs = {n: _as_float64(n, x) for n, x in names.items()}
    gg = np.zeros((B, T, H)) if g is None else _as_float64("g", g)
    aa = np.ones((B, T, H)) if alpha is None else _as_float64("alpha", alpha)
    if alpha is not None and (np.any(aa < 0) or np.any(aa > 1)):
        raise ValueError(f"alpha: expected values in [0, 1], got min {np.nanmin(aa)} and max {np.nanmax(aa)}")
    if eta is None:
        raise TypeError("eta: expected a non-negative scalar or an [H] array, got None")
    eta_is_scalar = not hasattr(eta, "shape") or tuple(np.shape(eta)) in ((),)
    ee = _as_float64("eta", eta).reshape(-1)
    ee = np.broadcast_to(ee, (H,)).copy() if ee.size in (1, H) else ee
    dp = np.ones((H, K)) if d_prior is None else _as_float64("d_prior", d_prior)
    check_scalars(d_min, d_max, float(np.min(ee)) if not np.isnan(ee).any() else float("nan"), scale)
    cs = None
    if cu_seqlens is not None:
        cs = check_cu_seqlens_values(cu_seqlens, T)
    h0 = np.zeros((N, H, K, V)) if initial_state is None else _as_float64("initial_state", initial_state)
    if initial_precond is None:
        d0 = np.broadcast_to(dp, (N, H, K)).copy()
    else:
        d0 = _as_float64("initial_precond", initial_precond)
    qr, kr = arrs["q"], arrs["k"]
    qq, kk = (l2norm(qr), l2norm(kr)) if use_qk_l2norm_in_kernel else (qr, kr)
    return Prepared(
        dims=dims, q=qq, k=kk, q_raw=qr, k_raw=kr, v=arrs["v"], beta=arrs["beta"], g=gg, alpha=aa,
        eta=ee, eta_is_scalar=eta_is_scalar, d_prior=dp,
        scale=float(K ** -0.5 if scale is None else scale), h0=h0, d0=d0,
        d_min=float(d_min), d_max=float(np.inf if d_max is None else d_max),
        use_qk_l2norm=bool(use_qk_l2norm_in_kernel), cu_seqlens=cs, has_g=g is not None,
        has_alpha=alpha is not None, has_d_prior=d_prior is not None,
        has_initial_precond=initial_precond is not None,
    )
