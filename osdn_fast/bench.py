"""``osdn bench``: ``chunk_osdn`` (C1–C3) against flash-linear-attention's DeltaNet on one GPU.

Times with ``triton.testing.do_bench`` (median of repeated runs, CUDA events) at (B, T, H, K=V) =
(8, 4096, 16, 128), (16, 2048, 32, 64) and (1, 32768, 16, 128) in bfloat16: forward, and forward+backward,
and the peak memory of forward+backward above the inputs; then one decoding step (E1–E8, T = 1 from a
carried state) of ``fused_recurrent_osdn`` against fla's ``fused_recurrent_delta_rule``. OSDN runs with
η = 0.5 (learner on), no gate and no APF, i.e. DeltaNet plus the learner. Ratios OSDN / fla, all measured
in one run on one card, go to reports/bench-<card>.md and .json, with a per-kernel time breakdown of OSDN.

fla autotunes its kernels, and its autotune keys leave out B and T (``chunk_gated_delta_rule_fwd_kernel_h_blockdim64``:
H, HV, K, V, BT, ...), so in one process the configs tuned at the first shape were reused at every later shape of the
same H, K, V: before the eleventh session this harness timed fla at (1, 32768, 16, 128) with the configs tuned at
(8, 4096, 16, 128). Each shape now starts fla from an empty tuning cache (``_reset_fla_tuning``; fla's on-disk
results cache off), so fla runs the configs it picks for that shape. OSDN's kernels are not autotuned.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

__all__ = ["SHAPES", "bench_case", "main"]

SHAPES = [(8, 4096, 16, 128), (16, 2048, 32, 64), (1, 32768, 16, 128)]


def _inputs(B, T, H, D, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, D, device="cuda", generator=g, dtype=dtype)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", generator=g), dim=-1).to(dtype)
    v = torch.randn(B, T, H, D, device="cuda", generator=g, dtype=dtype)
    beta = torch.rand(B, T, H, device="cuda", generator=g).to(dtype)
    do = torch.randn(B, T, H, D, device="cuda", generator=g, dtype=dtype)
    return q, k, v, beta, do


def _time_and_memory(fwd: Callable, leaves, do, reps_ms=(100, 500)):
    from triton.testing import do_bench

    def fb():
        o = fwd()
        o.backward(do)

    with torch.no_grad():
        t_f = do_bench(fwd, warmup=reps_ms[0], rep=reps_ms[1], return_mode="median")
    t_fb = do_bench(fb, warmup=reps_ms[0], rep=reps_ms[1], grad_to_none=leaves, return_mode="median")
    for x in leaves:
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fb()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    for x in leaves:
        x.grad = None
    return t_f, t_fb, peak


def _fla_autotuners(modules=None):
    """(name, autotuner) of every autotuned kernel of fla's loaded modules (``modules``: default every loaded ``fla``
    module), found as module attributes through any ``triton.heuristics`` wrappers (their ``fn``)."""
    from triton.runtime.autotuner import Autotuner
    if modules is None:
        modules = [m for n, m in list(sys.modules.items()) if m is not None and (n == "fla" or n.startswith("fla."))]
    seen = set()
    for mod in modules:
        for name, obj in list(vars(mod).items()):
            while obj is not None and id(obj) not in seen:
                seen.add(id(obj))
                if isinstance(obj, Autotuner):
                    yield name, obj
                obj = getattr(obj, "fn", None) if hasattr(obj, "run") else None


def _fla_tuned_configs(modules=None) -> Dict[str, List[str]]:
    """The configs fla's autotuners hold now, by kernel name (one per tuned key), e.g. which value block its state
    walks run at a shape."""
    return {name: [str(c) for c in at.cache.values()] for name, at in _fla_autotuners(modules) if at.cache}


def _reset_fla_tuning(modules=None) -> int:
    """Empty the in-memory config cache of every autotuned kernel of fla (``modules``: default every loaded ``fla``
    module), so that its next launch tunes for the shape it meets. Returns the number of autotuners emptied.

    Kernels are found as module attributes, through any ``triton.heuristics`` wrappers (their ``fn``)."""
    n = 0
    for _, at in _fla_autotuners(modules):
        at.cache.clear()
        n += 1
    return n


def bench_case(B: int, T: int, H: int, D: int, dtype=torch.bfloat16, eta: float = 0.5) -> Dict:
    """Forward and forward+backward times (ms) and peak memory (bytes) of OSDN (C1–C3) and fla DeltaNet.

    Parameters
    ----------
    B, T, H, D : batch, length, heads, head dimension (K = V = D)
    dtype : input dtype
    eta : OSDN's hyper step η (E8)

    Returns
    -------
    dict with osdn_* and fla_* entries (fla_* None where fla is missing or refuses) and ratios
    """
    from osdn_fast import chunk_osdn

    q, k, v, beta, do = _inputs(B, T, H, D, dtype)
    leaves = [x.requires_grad_() for x in (q, k, v, beta)]
    res = dict(B=B, T=T, H=H, K=D, V=D, dtype=str(dtype).replace("torch.", ""), eta=eta)
    t_f, t_fb, peak = _time_and_memory(lambda: chunk_osdn(q, k, v, beta, eta=eta)[0], leaves, do)
    res.update(osdn_fwd_ms=t_f, osdn_fwdbwd_ms=t_fb, osdn_peak_bytes=peak)
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        res["fla_autotuners_reset"] = _reset_fla_tuning()  # fla tunes for this shape (module docstring)
        t_f, t_fb, peak = _time_and_memory(lambda: chunk_delta_rule(q, k, v, beta)[0], leaves, do)
        res.update(fla_fwd_ms=t_f, fla_fwdbwd_ms=t_fb, fla_peak_bytes=peak, fla_configs=_fla_tuned_configs())
        res.update(ratio_fwd=res["osdn_fwd_ms"] / t_f, ratio_fwdbwd=res["osdn_fwdbwd_ms"] / t_fb,
                   ratio_peak=res["osdn_peak_bytes"] / peak)
    except Exception as e:  # pragma: no cover - depends on the machine
        res.update(fla_error=f"{type(e).__name__}: {e}")
    return res


def _decode_case(B=8, H=16, D=128, dtype=torch.bfloat16) -> Dict:
    from triton.testing import do_bench

    from osdn_fast import fused_recurrent_osdn

    q, k, v, beta, _ = _inputs(B, 1, H, D, dtype, seed=1)
    h0 = torch.randn(B, H, D, D, device="cuda") * 0.1
    d0 = torch.ones(B, H, D, device="cuda")
    res = dict(B=B, H=H, K=D, V=D, dtype=str(dtype).replace("torch.", ""))
    with torch.no_grad():
        res["osdn_step_ms"] = do_bench(lambda: fused_recurrent_osdn(q, k, v, beta, eta=0.5, initial_state=h0,
                                                                    initial_precond=d0, output_final_state=True),
                                       warmup=50, rep=300, return_mode="median")
        try:
            from fla.ops.delta_rule import fused_recurrent_delta_rule
            res["fla_step_ms"] = do_bench(lambda: fused_recurrent_delta_rule(q, k, v, beta, initial_state=h0,
                                                                             output_final_state=True),
                                          warmup=50, rep=300, return_mode="median")
            res["ratio_step"] = res["osdn_step_ms"] / res["fla_step_ms"]
        except Exception as e:  # pragma: no cover
            res["fla_error"] = f"{type(e).__name__}: {e}"
    return res


def _breakdown(B, T, H, D, dtype=torch.bfloat16) -> List[Dict]:
    """CUDA time per OSDN kernel over one forward+backward (torch.profiler)."""
    from osdn_fast import chunk_osdn

    q, k, v, beta, do = _inputs(B, T, H, D, dtype)
    for x in (q, k, v, beta):
        x.requires_grad_()
    for _ in range(2):
        chunk_osdn(q, k, v, beta, eta=0.5)[0].backward(do)
    for x in (q, k, v, beta):
        x.grad = None  # as in the timed runs (grad_to_none): no gradient accumulation kernels in the breakdown
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        chunk_osdn(q, k, v, beta, eta=0.5)[0].backward(do)
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t:
            rows.append(dict(name=ev.key[:60], ms=t / 1e3, calls=ev.count))
    rows.sort(key=lambda r: -r["ms"])
    return rows[:12]


def _render(meta: Dict, cases: List[Dict], dec: Optional[Dict], brk: List[Dict], out: Path) -> str:
    name = meta["card"].replace(" ", "-")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench-{name}.json").write_text(json.dumps(dict(meta=meta, cases=cases, decode=dec, breakdown=brk),
                                                       indent=1))
    f = lambda x, d=3: "—" if x is None else f"{x:.{d}f}"
    lines = [f"# Benchmark: chunk_osdn vs fla DeltaNet on {meta['card']}", "",
             f"Kernels of commit {meta.get('commit', 'unknown')}; torch {meta['torch']}, triton {meta['triton']}, "
             f"fla {meta['fla']}; triton.testing.do_bench medians; "
             "bf16; OSDN with η = 0.5, no gate, no APF; peak = max allocated during one forward+backward above the "
             "inputs. Ratio = OSDN / fla (targets: fwd+bwd ≤ 1.25, peak ≤ 1.2, decoding ≤ 1.5).", ""]
    if meta.get("fla_tuning") == "per shape":
        lines += ["fla tuned its kernels afresh for each shape (its tuning caches emptied before each, its on-disk "
                  "results cache off).", ""]
    else:
        lines += ["fla tuned its kernels once in this run, at the first shape of each (H, K, V) (its autotune keys "
                  "leave out B and T): at (1, 32768, 16, 128) it ran the configs tuned at (8, 4096, 16, 128), which "
                  "flatters OSDN's ratio there.", ""]
    if meta.get("kernels"):
        kn = meta["kernels"]
        scan_c = kn.get("dscan_chunk")
        if scan_c and kn["dscan"] == "chunk":
            lines += ["d-scan chunk per shape: " + ", ".join(f"{K}: {c}" for K, c in scan_c.items()) + "; state chunk 64.", ""]
        lines += [f"OSDN kernels: d-scan `{kn['dscan']}`, state backward `{kn['state_bwd']}`, UT inverse `{kn['wy']}` "
                  "(env OSDN_DSCAN=token, OSDN_STATE_BWD=split/fused, OSDN_WY=rows select the earlier kernels).", ""]
    if meta.get("note"):
        lines += [meta["note"], ""]
    lines += ["| B, T, H, K=V | OSDN fwd ms | fla fwd ms | ratio | OSDN fwd+bwd ms | fla fwd+bwd ms | ratio | "
              "OSDN peak MiB | fla peak MiB | ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    mib = lambda b: None if b is None else b / 2**20
    for r in cases:
        lines.append(f"| {r['B']}, {r['T']}, {r['H']}, {r['K']} | {f(r['osdn_fwd_ms'])} | {f(r.get('fla_fwd_ms'))} | "
                     f"{f(r.get('ratio_fwd'), 2)} | {f(r['osdn_fwdbwd_ms'])} | {f(r.get('fla_fwdbwd_ms'))} | "
                     f"{f(r.get('ratio_fwdbwd'), 2)} | {f(mib(r['osdn_peak_bytes']), 0)} | "
                     f"{f(mib(r.get('fla_peak_bytes')), 0)} | {f(r.get('ratio_peak'), 2)} |")
        if "fla_error" in r:
            lines.append(f"| fla failed: {r['fla_error'][:200]} |")
    if dec:
        lines += ["", f"Decoding step (B={dec['B']}, H={dec['H']}, K=V={dec['K']}, T=1, carried state): OSDN "
                  f"{f(dec['osdn_step_ms'], 4)} ms, fla fused_recurrent_delta_rule {f(dec.get('fla_step_ms'), 4)} ms, "
                  f"ratio {f(dec.get('ratio_step'), 2)}."]
    if brk:
        lines += ["", f"OSDN per-kernel CUDA time (torch.profiler), one forward+backward at {tuple(SHAPES[0])}:", "",
                  "| kernel | ms | calls |", "| --- | --- | --- |"]
        lines += [f"| {b['name']} | {b['ms']:.3f} | {b['calls']} |" for b in brk]
    text = "\n".join(lines) + "\n"
    (out / f"bench-{name}.md").write_text(text)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    """``osdn bench [--out DIR] [--shapes I ...] [--no-decode] [--no-breakdown] [--merge JSON]``: write
    reports/bench-<card>.{md,json} (C1–C3 vs fla DeltaNet).

    Parameters
    ----------
    argv : command-line arguments

    Returns
    -------
    int exit status (2 without a CUDA GPU, unless only rendering merged results)
    """
    ap = argparse.ArgumentParser(prog="osdn bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports")
    ap.add_argument("--shapes", nargs="*", type=int, default=None, help="indices into SHAPES (default all)")
    ap.add_argument("--quick", action="store_true", help="first shape only")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--merge", default=None, help="a bench JSON whose cases (measured earlier on the same card) "
                                                   "are added to this report, marked as such")
    args = ap.parse_args(argv)
    merged = json.loads(Path(args.merge).read_text()) if args.merge else None
    if not torch.cuda.is_available():
        if merged is None:
            print("osdn bench needs a CUDA GPU; none is visible", file=sys.stderr)
            return 2
        print(_render(merged["meta"], merged["cases"], merged.get("decode"), merged.get("breakdown", []),
                      Path(args.out)))
        return 0
    card = torch.cuda.get_device_name(0)
    # fla's on-disk autotune results would hand a later shape the configs of an earlier one (module docstring); read
    # when fla is imported, so set first
    os.environ["FLA_CACHE_RESULTS"] = "0"
    import triton
    from osdn_fast.tolerance import source_commit
    meta = dict(card=card, torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
                commit=source_commit(), fla_tuning="per shape")
    from osdn_fast.ops.osdn.chunk import _state_bwd_mode, dscan_plan
    meta["kernels"] = dict(dscan=os.environ.get("OSDN_DSCAN", "chunk"),
                           state_bwd=_state_bwd_mode(),
                           wy=os.environ.get("OSDN_WY", "blocked"))
    import numpy as np
    plan = {"x".join(map(str, s)): dscan_plan(s[3], 64, s[0] * s[2], np.arange(s[0] + 1) * s[1], torch.bfloat16)
            for s in SHAPES}
    meta["kernels"]["dscan_chunk"] = {name: p[0] for name, p in plan.items()}
    meta["kernels"]["dscan_two_level"] = {name: p[2] for name, p in plan.items()}
    try:
        import fla
        meta["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:
        meta["fla"] = f"missing: {e}"
    t0 = time.time()
    idx = [0] if args.quick else (range(len(SHAPES)) if args.shapes is None else args.shapes)
    cases = []
    for i in idx:
        r = bench_case(*SHAPES[i])
        print(json.dumps(r), flush=True)
        cases.append(r)
        torch.cuda.empty_cache()
    dec = None if args.no_decode else _decode_case()
    if dec:
        print(json.dumps(dec), flush=True)
    brk = []
    if not args.no_breakdown:
        try:
            brk = _breakdown(*SHAPES[0])
        except Exception as e:  # pragma: no cover
            brk = [dict(name=f"profiler failed: {e}", ms=0.0, calls=0)]
        print(json.dumps(brk), flush=True)
    meta["seconds"] = round(time.time() - t0, 1)
    if merged is not None:
        cases = merged["cases"] + cases
        meta["note"] = merged["meta"].get("note", "")
    print(_render(meta, cases, dec, brk, Path(args.out)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
