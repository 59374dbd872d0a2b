"""``osdn tolerance``: errors of the fast path against the float64 reference (spec §7), and the test bounds.

Both entry points (``chunk_osdn``, C1–C3; ``fused_recurrent_osdn``, E1–E8) run on seeded inputs in float32,
float16 and bfloat16; every output (o, final state, final preconditioner) and every gradient is compared
with the float64 oracle on the same (rounded) inputs. Per dtype and per output/gradient the report gives
the max absolute error, the max error relative to the reference's max magnitude and the relative RMS
error, with the shapes, seeds and device. Without a GPU the kernels run in the Triton interpreter at small
shapes and the oracle is :mod:`osdn_ref` (NumPy, float64); on a GPU the shapes are realistic and the
oracle is the torch recurrence in float64 on the GPU (checked against :mod:`osdn_ref` by the tests).

The bounds the tests assert (:data:`TOLERANCES`) were set from these reports (reports/tolerance-*.json):
roughly ten times the largest error measured there and over several hundred Hypothesis examples, per
backend and dtype; they are never loosened to make a failing run pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

__all__ = ["TOLERANCES", "BACKEND", "scaled_error", "assert_within", "realistic_problem", "run", "main"]

BACKEND = ("interpreter" if os.environ.get("TRITON_INTERPRET", "0") == "1"
           else ("cuda" if torch.cuda.is_available() else "cpu"))

# Bound on scaled_error (max|x − ref| / max(max|ref|, floor)) per backend, dtype and kind of quantity.
# "fwd": o, final_state, final_precond; "grad": every gradient.
TOLERANCES: Dict[str, Dict[str, Dict[str, float]]] = {
    # interpreter: tl.dot in float32 for every input dtype, so fp16/bf16 errors are the rounding of the
    # stored inputs/outputs/gradients. Measured worst (400 Hypothesis examples of tests/strategies.py, both
    # entry points, chunk 16/32, and reports/tolerance-cpu-interpreter.json): float32 fwd 2.1e-6, grad
    # 1.4e-5; float16 fwd 4.3e-4, grad 5.5e-3; bfloat16 (report only) fwd 6e-3, grad 5e-3.
    "interpreter": {
        "float32": {"fwd": 2e-5, "grad": 1e-4},
        "float16": {"fwd": 5e-3, "grad": 5e-2},
        "bfloat16": {"fwd": 6e-2, "grad": 1e-1},
    },
    # cuda: fp32 dots in IEEE mode; fp16/bf16 dots with 16-bit operands and float32 accumulation. Measured
    # worst (reports/tolerance-NVIDIA-H200.json, B=2, T=2048, H=4, K=V=128, full config, both entry points):
    # float32 fwd 4.9e-7, grad 9.7e-6; float16 fwd 6.6e-4, grad 7.4e-4; bfloat16 (reports/tolerance-NVIDIA-H200-bf16.json,
    # same shapes, full and plain configs) fwd 5.7e-3, grad 7.2e-3. Rechecked on the kernels of the fourth session
    # (reports/tolerance-NVIDIA-H200-full.json, full config, seeds 0 and 1): float32 5.2e-7 / 9.7e-7, float16
    # 8.1e-4 / 1.5e-3, bfloat16 6.7e-3 / 6.4e-3 (fwd / grad). The small Hypothesis problems (odd shapes,
    # K = 1 with the L2 norm, strong cancellations) err more than the realistic ones in the interpreter, so each
    # cuda bound is at least the interpreter's for its dtype and about 10x or more the GPU's measured worst.
    "cuda": {
        "float32": {"fwd": 2e-5, "grad": 1e-4},
        "float16": {"fwd": 1e-2, "grad": 5e-2},
        "bfloat16": {"fwd": 6e-2, "grad": 1e-1},
    },
}
FWD = ("o", "final_state", "final_precond")


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def scaled_error(e: Dict[str, float], floor: float) -> float:
    """max|x − ref| / max(max|ref|, floor): the tested error measure of T1 (C1–C3 and E1–E8 kernels against the
    float64 E1–E8 oracle; spec §7's relative-to-max error, with a
    floor so that quantities that cancel to nearly zero are judged on their natural scale, the O(0.1–1)
    magnitude of the outputs and gradients of these problems).

    Parameters
    ----------
    e : dict from :func:`osdn_fast.compare.error_metrics` (needs ``max_abs`` and ``ref_max``)
    floor : float

    Returns
    -------
    float (NaN if the fast result has a non-finite value the reference lacks)
    """
    return e["max_abs"] / max(e["ref_max"], floor)


def _floor(name: str, l2norm: bool) -> float:
    # Through the L2 normalisation (spec §2) the gradients of q and k are projections that cancel to a
    # small fraction of the incoming gradient; their rounding error is relative to that incoming scale.
    return 1.0 if (l2norm and name in ("dq", "dk")) else 0.1


def assert_within(errs: Dict[str, Dict[str, float]], dtype, backend: str = BACKEND, what: str = "",
                  l2norm: bool = False) -> None:
    """Assert every output/gradient error is within :data:`TOLERANCES` (spec §7; E1–E8 vs C1–C3, T1).

    Parameters
    ----------
    errs : dict name -> metrics, from :func:`osdn_fast.compare.compare`
    dtype : torch.dtype of the streamed inputs
    backend : "interpreter" or "cuda"
    what : label for the failure message
    l2norm : whether use_qk_l2norm_in_kernel was on
    """
    tol = TOLERANCES[backend][_dtype_name(dtype)]
    bad = []
    for name, e in errs.items():
        bound = tol["fwd" if name in FWD else "grad"]
        s = scaled_error(e, _floor(name, l2norm))
        if not (s <= bound):  # NaN fails
            bad.append(f"{name}: scaled error {s:.3e} > {bound:.1e} (max_abs {e['max_abs']:.3e}, "
                       f"ref max {e['ref_max']:.3e}, rel RMS {e['rel_rms']:.3e})")
    assert not bad, f"{what} {_dtype_name(dtype)} on {backend}:\n  " + "\n  ".join(bad)


def realistic_problem(B: int, T: int, H: int, K: int, V: int, seed: int, full: bool = True) -> Dict:
    """Seeded reference keyword arguments of a typical layer's inputs (spec §1 shapes).

    q Gaussian; k Gaussian then L2-normalised (as DeltaNet layers feed it); v Gaussian; β = sigmoid(·).
    ``full``: also log-decays g ∈ [−0.2, 0], APF gates α ∈ [0.5, 1] with 2% hard resets (α = 0), η per
    head in [0.1, 1.5], a prior d° ∈ [0.5, 1.5], clip bounds [0.25, 4] (sometimes active), an initial state
    and preconditioner. Without ``full``: only q, k, v, β and a scalar η = 0.5 (all other defaults).

    Returns
    -------
    dict of float64 NumPy arrays for :func:`osdn_ref.recurrent_osdn` (E1–E8)
    """
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((B, T, H, K))
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=k / np.linalg.norm(k, axis=-1, keepdims=True),
              v=rng.standard_normal((B, T, H, V)), beta=1 / (1 + np.exp(-rng.standard_normal((B, T, H)))))
    if not full:
        kw["eta"] = 0.5
        return kw
    kw["g"] = -rng.uniform(0.0, 0.2, (B, T, H))
    a = rng.uniform(0.5, 1.0, (B, T, H))
    a[rng.uniform(size=(B, T, H)) < 0.02] = 0.0
    kw["alpha"] = a
    kw["eta"] = rng.uniform(0.1, 1.5, H)
    kw["d_prior"] = rng.uniform(0.5, 1.5, (H, K))
    kw["d_min"], kw["d_max"] = 0.25, 4.0
    kw["initial_state"] = 0.1 * rng.standard_normal((B, H, K, V))
    kw["initial_precond"] = rng.uniform(0.2, 2.0, (B, H, K))
    return kw


def run(shapes: Dict[str, int], grad_T: Optional[int], seeds: List[int], dtypes, device: str, oracle: str,
        configs=("full", "plain"), chunk_size: int = 64, rows: Optional[List[Dict]] = None) -> List[Dict]:
    """Measure every error of both entry points (C1–C3 chunkwise, E1–E8 token by token; T1, spec §7) on seeded
    problems.

    Parameters
    ----------
    shapes : dict B, T, H, K, V (forward)
    grad_T : sequence length for the gradient runs (None: the same T)
    seeds : problem seeds
    dtypes : iterable of torch dtypes
    device : "cpu" (interpreter) or "cuda"
    oracle : "numpy" (osdn_ref) or "torch" (float64 torch recurrence on ``device``)
    rows : list to append to (kept when the run is interrupted)

    Returns
    -------
    list of rows: entry, dtype, config, seed, shape, quantity, max_abs, rel_max, rel_rms, ref_max
    """
    from osdn_fast import chunk_osdn, fused_recurrent_osdn
    from osdn_fast.compare import compare

    rows = [] if rows is None else rows
    for cfg in configs:
        for seed in seeds:
            for phase, T in (("fwd+grad", grad_T or shapes["T"]),) if grad_T in (None, shapes["T"]) else \
                    (("fwd", shapes["T"]), ("grad", grad_T)):
                kw = realistic_problem(shapes["B"], T, shapes["H"], shapes["K"], shapes["V"], seed, cfg == "full")
                kw["use_qk_l2norm_in_kernel"] = cfg == "full"
                for dtype in dtypes:
                    ref = None  # the oracle on this dtype's rounded inputs, shared by both entry points
                    for entry, fn in (("chunk_osdn", chunk_osdn), ("fused_recurrent_osdn", fused_recurrent_osdn)):
                        t0 = time.time()
                        errs, _, ref = compare(fn, kw, dtype, device, grads=phase != "fwd", seed=seed,
                                               oracle=oracle, ref=ref, chunk_size=chunk_size)
                        for name, e in errs.items():
                            if phase == "grad" and name in FWD:
                                continue
                            rows.append(dict(entry=entry, dtype=_dtype_name(dtype), config=cfg, seed=seed,
                                             shape=dict(shapes, T=T), quantity=name, **e))
                        print(f"  {entry:22s} {_dtype_name(dtype):9s} {cfg:5s} seed {seed} T={T} {phase}: "
                              f"{time.time() - t0:.1f}s", flush=True)
    return rows


def _summary(rows: List[Dict]) -> List[Dict]:
    out = {}
    for r in rows:
        key = (r["entry"], r["dtype"], r["quantity"])
        cur = out.setdefault(key, dict(entry=r["entry"], dtype=r["dtype"], quantity=r["quantity"], max_abs=0.0,
                                       rel_max=0.0, rel_rms=0.0, scaled=0.0))
        for m in ("max_abs", "rel_max", "rel_rms"):
            cur[m] = max(cur[m], r[m]) if np.isfinite(r[m]) else float("nan")
        cur["scaled"] = max(cur["scaled"], scaled_error(r, _floor(r["quantity"], r["config"] == "full")))
    return list(out.values())


def source_commit() -> str:
    """The commit whose kernels a report measured (spec §7: a report records what produced it): env OSDN_COMMIT (set by the GPU driver, whose copy of the tree
    has no current git history), else ``git rev-parse --short HEAD`` of this checkout (with ``+dirty`` for
    uncommitted changes to tracked files), else ``unknown``."""
    if os.environ.get("OSDN_COMMIT"):
        return os.environ["OSDN_COMMIT"]
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return "cpu-interpreter"


def _dscan_desc(shapes) -> str:
    """Which preconditioner scan the report measured: token-serial, or the chunk form with its scan chunk."""
    import os
    from osdn_fast.ops.osdn.chunk import dscan_plan
    if os.environ.get("OSDN_DSCAN", "chunk") == "token":
        return "token-serial"
    B, T = shapes["B"], shapes["T"]
    plan = {n: dscan_plan(shapes["K"], 64, B * shapes["H"], np.arange(B + 1) * T, getattr(torch, n))
            for n in ("float32", "float16", "bfloat16")}
    if len({p[:2] for p in plan.values()}) == 1 and not any(p[2] for p in plan.values()):
        return f"chunk form, scan chunk {plan['float32'][0]}"
    return "chunk form, scan chunk " + ", ".join(f"{p[0]} for {n}" + (" (two-level carry)" if p[2] else "")
                                                   for n, p in plan.items())


def _walks_desc(shapes) -> str:
    """Which serial state walks of C3 the report measured: the forward walk (``two-product``, ``full`` or ``lean``)
    and the state adjoint's (``tiled`` or ``full``), two-level where their segments run, per input dtype where they
    differ (``chunk._state_walk_mode``, ``chunk._dh_walk_mode``, ``chunk.walk_segment_length``)."""
    import numpy as np
    from osdn_fast.ops.osdn.chunk import (_dh_walk_mode, _fwd_walk_config, _key_block, _sm_count, _state_walk_mode,
                                          _two_product_ok, _value_block, walk_segment_length)
    from osdn_fast.ops.osdn.utils import cdiv, dot_dtype
    NH = shapes["B"] * shapes["H"]
    cu_host = np.arange(shapes["B"] + 1, dtype=np.int64) * shapes["T"]
    sms = _sm_count(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    names = {"wu": "two-product", "full": "full", "lean": "lean", "tiles": "tiled"}
    desc = {}
    for n in ("float32", "float16", "bfloat16"):
        dt = getattr(torch, n)
        DT = dot_dtype(dt)
        BK = _key_block(shapes["K"], DT)
        walk = _state_walk_mode(_two_product_ok(BK, dt), NH)
        dh = _dh_walk_mode(walk == "lean", NH)
        BVF = _fwd_walk_config(BK, _value_block(shapes["K"], shapes["V"], DT), DT)[0]
        LS = walk_segment_length(cdiv(shapes["V"], BVF) * NH, cu_host, 64, BK, sms)
        two = {"wu": LS, "tiles": LS}
        fw = f"two-level {names[walk]} (segments of {LS} chunks)" if two.get(walk) else names[walk]
        bw = f"two-level {names[dh]} (segments of {LS} chunks)" if two.get(dh) else names[dh]
        desc[n] = f"forward {fw}, adjoint {bw}"
    if len(set(desc.values())) == 1:
        return desc["float32"]
    return "; ".join(f"{d} for {n}" for n, d in desc.items())


def render_markdown(meta: dict, summary: list) -> str:
    """The markdown page of a tolerance report from its JSON parts (``meta``, ``summary``; spec §7)."""
    lines = [f"# Tolerance report: {meta['device']}", "",
             f"Fast path vs float64 oracle ({meta['oracle']}); backend {meta['backend']}; shapes {meta['shapes']}; "
             f"gradient T {meta['grad_T']}; seeds {meta['seeds']}; dtypes {meta['dtypes']}; "
             f"configs {meta['configs']} of full (g, α with resets, η per head, d°, clip, h0, d0, "
             "use_qk_l2norm_in_kernel) and plain (q, k, v, β, η = 0.5); chunk 64 "
             f"(d-scan: {meta.get('dscan', '?')}"
             + (f"; state walks: {meta['walks']}" if "walks" in meta else "")
             + f"); kernels of commit {meta.get('commit', 'unknown')}; "
             f"torch {meta['torch']}, triton {meta['triton']}; "
             f"{meta['seconds']} s." + (" PARTIAL: interrupted by its time limit; only the rows below were "
             "measured." if meta['partial'] else ""), "",
             "max_abs = max|x − ref|; rel_max = max_abs / max|ref|; rel_rms = ‖x − ref‖ / ‖ref‖; "
             "scaled = max_abs / max(max|ref|, floor) is what the tests bound (floor 0.1; 1.0 for dq, dk under the "
             "L2 normalisation, whose gradients cancel to a small part of the incoming one). Worst over seeds and "
             "configs.", "",
             "| entry | dtype | quantity | max_abs | rel_max | rel_rms | scaled | bound | ok |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        lines.append(f"| {s['entry']} | {s['dtype']} | {s['quantity']} | {s['max_abs']:.2e} | {s['rel_max']:.2e} | "
                     f"{s['rel_rms']:.2e} | {s['scaled']:.2e} | {s['bound']:.0e} | {'yes' if s['within'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """``osdn tolerance [--out DIR] [--seeds ...] [--T N] [--grad-T N]``: write reports/tolerance-<device>.{md,json}
    (spec §7: T1 measured, C1–C3 and E1–E8 kernels against the float64 oracle).

    Parameters
    ----------
    argv : command-line arguments

    Returns
    -------
    int exit status (0; 1 if an error exceeds :data:`TOLERANCES`)
    """
    ap = argparse.ArgumentParser(prog="osdn tolerance", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--T", type=int, default=None, help="sequence length (default 2048 on GPU, 100 interpreted)")
    ap.add_argument("--grad-T", type=int, default=None, help="sequence length of the gradient runs")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                    choices=["float32", "float16", "bfloat16"], help="input dtypes to measure (default: all three)")
    ap.add_argument("--configs", nargs="+", default=["full", "plain"], choices=["full", "plain"])
    ap.add_argument("--tag", default="", help="suffix of the report's file name (e.g. to keep a partial run's report)")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only rewrite the markdown page of an existing report's JSON (next to it) and exit")
    args = ap.parse_args(argv)
    if args.render:
        src = Path(args.render)
        d = json.loads(src.read_text())
        src.with_suffix(".md").write_text(render_markdown(d["meta"], d["summary"]))
        print(f"wrote {src.with_suffix('.md')}")
        return 0
    on_gpu = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
    device = "cuda" if on_gpu else "cpu"
    if on_gpu:
        shapes = dict(B=2, T=args.T or 2048, H=4, K=128, V=128)
        oracle, backend = "torch", "cuda"
    else:
        shapes = dict(B=2, T=args.T or 100, H=2, K=32, V=24)
        oracle, backend = "numpy", "interpreter"
    dtypes = tuple(getattr(torch, d) for d in args.dtypes)
    t0 = time.time()
    rows: List[Dict] = []
    partial = False

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        run(shapes, args.grad_T, args.seeds, dtypes, device, oracle, configs=tuple(args.configs), rows=rows)
    except KeyboardInterrupt:
        partial = True
        print("interrupted: writing the rows measured so far (report marked partial)", flush=True)
    summary = _summary(rows)
    name = _device_name(device) + (f"-{args.tag}" if args.tag else "")
    failures = []
    for s in summary:
        tol = TOLERANCES[backend][s["dtype"]]["fwd" if s["quantity"] in FWD else "grad"]
        s["bound"] = tol
        s["within"] = bool(s["scaled"] <= tol)
        if not s["within"]:
            failures.append(s)
    meta = dict(device=name, backend=backend, oracle=oracle, shapes=shapes, grad_T=args.grad_T or shapes["T"],
                seeds=args.seeds, configs=list(args.configs), dtypes=list(args.dtypes), chunk_size=64,
                dscan=_dscan_desc(shapes), walks=_walks_desc(shapes), torch=torch.__version__,
                triton=__import__("triton").__version__, python=platform.python_version(),
                seconds=round(time.time() - t0, 1), partial=partial, commit=source_commit(),
                metric_note="scaled = max_abs / max(ref_max, floor) (floor 0.1; 1.0 for dq, dk under the L2 norm), the tested measure; bound from TOLERANCES")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tolerance-{name}.json").write_text(json.dumps(dict(meta=meta, summary=summary, rows=rows), indent=1))
    md = render_markdown(meta, summary)
    (out / f"tolerance-{name}.md").write_text(md)
    print(md, end="")
    print(f"wrote {out}/tolerance-{name}.md and .json")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
