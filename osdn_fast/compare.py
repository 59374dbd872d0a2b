"""Comparison of the fast path with the float64 reference (spec §7), shared by the tests and ``osdn tolerance``.

The reference is evaluated on the inputs *as the fast path sees them* (each streamed input rounded to
the tested dtype, then widened to float64), so the errors measured here are the kernels' own, not the
rounding of the inputs.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from osdn_ref import recurrent_osdn, recurrent_osdn_vjp

__all__ = ["GRAD_NAMES", "OUT_NAMES", "to_torch", "rounded_reference_kwargs", "reference_outputs",
           "fast_outputs", "error_metrics", "compare", "torch_reference_outputs"]

STREAM = ("q", "k", "v", "beta", "g", "alpha")
FLOAT_STATE = ("d_prior", "initial_state", "initial_precond")
GRAD_NAMES = ("q", "k", "v", "beta", "g", "alpha", "eta", "d_prior", "initial_state", "initial_precond")
OUT_NAMES = ("o", "final_state", "final_precond")


def to_torch(kw: Dict, dtype: torch.dtype, device="cpu", requires_grad: bool = True,
             eta_as_tensor: bool = True) -> Dict:
    """Torch arguments of the spec §6 API from reference (NumPy) keyword arguments.

    Parameters
    ----------
    kw : dict
        Keyword arguments of :func:`osdn_ref.recurrent_osdn` (q, k [B, T, H, K]; v [B, T, H, V];
        beta, g, alpha [B, T, H]; eta float or [H]; d_prior [H, K]; initial_state [N, H, K, V];
        initial_precond [N, H, K]; cu_seqlens [N + 1]; scalars).
    dtype : torch.dtype
        dtype of the streamed inputs q, k, v, beta, g, alpha (E1–E6); d_prior, the initial state and
        preconditioner and a tensor eta are float32.
    requires_grad : bool
        Make every floating tensor a leaf that requires grad.
    eta_as_tensor : bool
        Pass a scalar η as a 0-d float32 tensor (so that it receives a gradient) rather than a float.

    Returns
    -------
    dict of keyword arguments for ``chunk_osdn`` / ``fused_recurrent_osdn``.
    """
    out = {}
    for name, x in kw.items():
        if name in STREAM:
            out[name] = torch.tensor(np.asarray(x), dtype=dtype, device=device).requires_grad_(requires_grad)
        elif name in FLOAT_STATE:
            out[name] = torch.tensor(np.asarray(x), dtype=torch.float32, device=device).requires_grad_(requires_grad)
        elif name == "eta":
            if isinstance(x, np.ndarray) or eta_as_tensor:
                out[name] = torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32,
                                         device=device).requires_grad_(requires_grad)
            else:
                out[name] = float(x)
        elif name == "cu_seqlens":
            out[name] = torch.tensor(np.asarray(x), dtype=torch.int32, device=device)
        else:
            out[name] = x
    return out


def rounded_reference_kwargs(tkw: Dict) -> Dict:
    """Float64 NumPy copies of torch arguments, exactly as stored (spec §7: same inputs for both sides).

    Parameters
    ----------
    tkw : dict
        Torch keyword arguments (from :func:`to_torch`).

    Returns
    -------
    dict of keyword arguments for :func:`osdn_ref.recurrent_osdn` (E1–E8).
    """
    out = {}
    for name, x in tkw.items():
        if isinstance(x, torch.Tensor):
            arr = x.detach().cpu()
            out[name] = arr.numpy() if name == "cu_seqlens" else arr.to(torch.float64).numpy()
            if name == "eta" and out[name].ndim == 0:
                out[name] = float(out[name])
        else:
            out[name] = x
    return out


def reference_outputs(kw64: Dict, do: np.ndarray, dht: Optional[np.ndarray], ddt: Optional[np.ndarray],
                      eta_is_tensor: bool, grads: bool = True) -> Dict[str, np.ndarray]:
    """Float64 oracle: (o, h_T, d_T) of the recurrence E1–E8 and its exact VJP (every input's gradient).

    Parameters
    ----------
    kw64 : dict
        Reference keyword arguments (float64 arrays).
    do : [B, T, H, V]; dht : [N, H, K, V] or None; ddt : [N, H, K] or None
        Cotangents of o, the final state and the final preconditioner.
    eta_is_tensor : bool
        Whether η is differentiated (a tensor on the fast side).
    grads : bool
        Also compute gradients.

    Returns
    -------
    dict: ``o``, ``final_state``, ``final_precond`` and ``d<name>`` for each differentiable input present.
    """
    o, h, d = recurrent_osdn(**kw64, output_final_state=True)
    res = {"o": o, "final_state": h, "final_precond": d}
    if grads:
        g = recurrent_osdn_vjp(**kw64, do=do, dht=dht, ddt=ddt)
        for name in GRAD_NAMES:
            if g.get(name) is None or name not in kw64:
                continue
            if name == "eta" and not eta_is_tensor:
                continue
            res["d" + name] = np.asarray(g[name])
    return res


def fast_outputs(fn: Callable, tkw: Dict, do: Optional[torch.Tensor], dht: Optional[torch.Tensor],
                 ddt: Optional[torch.Tensor], grads: bool = True, **extra) -> Dict[str, np.ndarray]:
    """Run a fast entry point (``chunk_osdn`` or ``fused_recurrent_osdn``) forward and, if asked, backward.

    Parameters
    ----------
    fn : callable with the spec §6 signature
    tkw : dict
        Torch keyword arguments (leaves requiring grad where gradients are wanted).
    do : [B, T, H, V]; dht : [N, H, K, V] or None; ddt : [N, H, K] or None
        Cotangents of the outputs (E6) and of the final (h, d).

    Returns
    -------
    dict of float64 NumPy arrays, keyed as :func:`reference_outputs`.
    """
    for x in tkw.values():
        if isinstance(x, torch.Tensor) and x.grad is not None:
            x.grad = None
    o, h, d = fn(**tkw, output_final_state=True, **extra)
    res = {"o": o, "final_state": h, "final_precond": d}
    if grads:
        loss = (o.float() * do.float()).sum()
        if dht is not None:
            loss = loss + (h * dht).sum()
        if ddt is not None:
            loss = loss + (d * ddt).sum()
        loss.backward()
        for name in GRAD_NAMES:
            x = tkw.get(name)
            if isinstance(x, torch.Tensor) and x.requires_grad:
                res["d" + name] = x.grad
    return {n: (v.detach().to("cpu", torch.float64).numpy() if isinstance(v, torch.Tensor) else v)
            for n, v in res.items()}


def error_metrics(x: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    """The three error measures of spec §7 of ``x`` (a fast-path output or gradient of C1–C3 / E1–E8) against the
    float64 reference ``ref`` (T1 checked numerically).

    Returns
    -------
    dict: ``max_abs`` = max|x − ref|, ``rel_max`` = max|x − ref| / max|ref|, ``rel_rms`` = ‖x − ref‖ / ‖ref‖
    (both relative ones divide by 1 where the reference is all zero), ``ref_max`` = max|ref|; NaN where x
    has a non-finite value that ref lacks.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs reference {ref.shape}")
    if x.size == 0:
        return dict(max_abs=0.0, rel_max=0.0, rel_rms=0.0, ref_max=0.0)
    if not np.array_equal(np.isfinite(x), np.isfinite(ref)):
        return dict(max_abs=float("nan"), rel_max=float("nan"), rel_rms=float("nan"), ref_max=float("nan"))
    diff = np.abs(x - ref)
    diff = np.where(np.isfinite(ref), diff, 0.0)
    m = float(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0))
    n = float(np.linalg.norm(np.where(np.isfinite(ref), ref, 0.0)))
    return dict(max_abs=float(diff.max()), rel_max=float(diff.max()) / (m if m > 0 else 1.0),
                rel_rms=float(np.linalg.norm(diff)) / (n if n > 0 else 1.0), ref_max=m)


def compare(fn: Callable, kw: Dict, dtype: torch.dtype, device="cpu", grads: bool = True, seed: int = 0,
            oracle: str = "numpy", ref: Optional[Dict] = None, **extra) -> Tuple[Dict[str, Dict[str, float]], Dict, Dict]:
    """Errors of one entry point against the float64 oracle (E1–E8 and its VJP) on one problem (spec §7).

    Parameters
    ----------
    fn : ``chunk_osdn`` or ``fused_recurrent_osdn``
    kw : dict
        Reference keyword arguments (NumPy); converted with :func:`to_torch`.
    dtype : torch.dtype
        Streamed-input dtype.
    seed : int
        Seed of the random cotangents.
    oracle : "numpy" or "torch"
        :func:`reference_outputs` (osdn_ref, float64 on the CPU) or :func:`torch_reference_outputs`
        (the torch recurrence in float64 on ``device``).
    ref : dict, optional
        Oracle results computed earlier for the same (kw, dtype, seed); skips the oracle.

    Returns
    -------
    (errors per output/gradient name, fast results, reference results)
    """
    tkw = to_torch(kw, dtype, device, requires_grad=grads)
    kw64 = rounded_reference_kwargs(tkw)
    B, T, H, K = kw["q"].shape
    V = kw["v"].shape[-1]
    N = B if kw.get("cu_seqlens") is None else len(kw["cu_seqlens"]) - 1
    rng = np.random.default_rng(seed)
    do = rng.standard_normal((B, T, H, V))
    dht = rng.standard_normal((N, H, K, V))
    ddt = rng.standard_normal((N, H, K))
    t = lambda a: torch.tensor(a, dtype=torch.float32, device=device)
    fast = fast_outputs(fn, tkw, t(do), t(dht), t(ddt), grads=grads, **extra)
    if ref is not None:
        pass
    elif oracle == "numpy":
        ref = reference_outputs(kw64, do, dht, ddt, eta_is_tensor=isinstance(tkw.get("eta"), torch.Tensor),
                                grads=grads)
    elif oracle == "torch":
        ref = torch_reference_outputs(tkw, t(do), t(dht), t(ddt), grads=grads)
    else:
        raise ValueError(f"oracle: expected 'numpy' or 'torch', got {oracle!r}")
    errs = {}
    for name, r in ref.items():
        if name not in fast or fast[name] is None:
            raise AssertionError(f"{name}: the fast path returned no value where the reference has one")
        errs[name] = error_metrics(fast[name], r)
    return errs, fast, ref


def torch_reference_outputs(tkw: Dict, do: torch.Tensor, dht: Optional[torch.Tensor], ddt: Optional[torch.Tensor],
                            grads: bool = True) -> Dict[str, np.ndarray]:
    """Float64 oracle on the tensors' own device: the torch recurrence E1–E8 (:mod:`osdn_fast.ops.osdn.naive`)
    in float64 and its autograd gradients.

    Used where the NumPy reference is too slow (realistic GPU shapes); the tests check that it equals
    :func:`osdn_ref.recurrent_osdn` and :func:`osdn_ref.recurrent_osdn_vjp` on small problems (T1).

    Parameters
    ----------
    tkw : dict
        Torch keyword arguments (from :func:`to_torch`); read, never modified.
    do : [B, T, H, V]; dht : [N, H, K, V] or None; ddt : [N, H, K] or None
        Cotangents.

    Returns
    -------
    dict keyed as :func:`reference_outputs`.
    """
    from osdn_fast.ops.osdn.naive import naive_recurrent_osdn

    kw = {}
    for name, x in tkw.items():
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            kw[name] = x.detach().to(torch.float64).clone().requires_grad_(grads and x.requires_grad)
        else:
            kw[name] = x
    if kw.get("cu_seqlens") is not None:
        kw["cu_seqlens"] = kw["cu_seqlens"].cpu()
    with torch.enable_grad():
        o, h, d = naive_recurrent_osdn(**kw, output_final_state=True)
        res = {"o": o, "final_state": h, "final_precond": d}
        if grads:
            loss = (o * do.double()).sum()
            if dht is not None:
                loss = loss + (h * dht.double()).sum()
            if ddt is not None:
                loss = loss + (d * ddt.double()).sum()
            loss.backward()
            for name in GRAD_NAMES:
                x = kw.get(name)
                if isinstance(x, torch.Tensor) and x.requires_grad:
                    res["d" + name] = x.grad
    return {n: v.detach().cpu().numpy() for n, v in res.items()}
