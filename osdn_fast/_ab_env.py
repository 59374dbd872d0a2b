"""GPU A/B of kernel settings chosen by environment variables (not part of the API).

Usage: python osdn_fast/_ab_env.py NAME=VAR=VAL,VAR=VAL ...   (the first config is the baseline)

A config's ``_CS=32`` sets the state chunk size (``chunk_size``) instead of an environment variable. Env
AB_SHAPES="B,T,H,D;B,T,H,D" picks the shapes (default 8,4096,16,128); AB_FLA=1 adds fla's ``chunk_delta_rule``
per shape, timed in the same run (with its per-kernel times), tuned afresh for each shape.

For each shape and config, bf16: chunk_osdn forward and forward+backward time (do_bench medians, η = 0.5, no gate: the
`osdn bench` case; AB_TIME_GATED=1 times the gated problem below instead), the peak memory of one forward+backward
above the inputs, the per-kernel CUDA time of one forward+backward (torch.profiler), and the largest output and gradient difference to the shape's baseline config, scaled
by the gradient's max, on two problems: with a gate, APF (α in [0.98, 1]) and an initial state (``diff``), and with an
initial state and no gate (``diff_plain``: the state never decays, so every segment carry of the two-level walks shows;
the gated problem's state decays by about e^-12 over a segment of 4096 tokens). Prints one JSON line per (shape, config)
and a markdown table. A fault (illegal memory access) poisons the CUDA context and ends every later config of the run.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
os.environ["FLA_CACHE_RESULTS"] = "0"  # fla tunes for each shape (osdn_fast/bench.py), before fla is imported
from triton.testing import do_bench  # noqa: E402

from osdn_fast import chunk_osdn  # noqa: E402
from osdn_fast.bench import _fla_tuned_configs, _reset_fla_tuning  # noqa: E402

CONFIGS = []
for arg in sys.argv[1:]:
    name, _, rest = arg.partition("=")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    CONFIGS.append((name, env))
KEYS = sorted({k for _, env in CONFIGS for k in env if not k.startswith("_")})
SHAPES = [tuple(int(x) for x in s.split(",")) for s in os.environ.get("AB_SHAPES", "8,4096,16,128").split(";")]
dt = torch.bfloat16
names = ["o", "dq", "dk", "dv", "dbeta", "dg", "dalpha", "dh0"]
names_plain = ["o", "dq", "dk", "dv", "dbeta", "dh0"]


def peak_mib(fn, leaves):
    for x in leaves:
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def kernel_ms(fn):
    """CUDA time (ms) of each Triton kernel in one call of fn (torch.profiler; torch's own kernels left out)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {ev.key: round(ev.device_time_total / 1e3, 3) for ev in prof.key_averages()
            if ev.device_type == torch.autograd.DeviceType.CUDA and "kernel" in ev.key and "at::" not in ev.key}


rows = []
for (B, T, H, D) in SHAPES:
    gen = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)
    q = r(B, T, H, D).to(dt).requires_grad_()
    k = torch.nn.functional.normalize(r(B, T, H, D), dim=-1).to(dt).requires_grad_()
    v = r(B, T, H, D).to(dt).requires_grad_()
    beta = torch.rand(B, T, H, device="cuda", generator=gen).to(dt).requires_grad_()
    # weak log-decays (mean about −0.003 a token): with the earlier / 8 (−0.1) a state decayed below float32 within a
    # few hundred tokens, and the diff could not see a change to the two-level walks' segment carries (run13: exactly 0)
    g = (torch.nn.functional.logsigmoid(r(B, T, H)) / 256).to(dt).requires_grad_()
    # APF gates near 1: with α uniform in [0, 1] the deviation entering a scan chunk decays to nothing within it, and the
    # diff could not see a change to the d-scan's carries (eighth session: all diffs were exactly 0)
    alpha = (1.0 - 0.02 * torch.rand(B, T, H, device="cuda", generator=gen)).to(dt).requires_grad_()
    h0 = (0.1 * r(B, H, D, D)).requires_grad_()
    do = r(B, T, H, D).to(dt)
    plain = [q, k, v, beta]
    full = [q, k, v, beta, g, alpha, h0]
    ref = ref_p = None
    # AB_TIME_GATED=1 times the gated problem (g, APF, h0) instead of `osdn bench`'s ungated one
    gated = os.environ.get("AB_TIME_GATED") == "1"
    extra = dict(g=g, alpha=alpha, initial_state=h0) if gated else {}
    timed = full if gated else plain
    for name, env in CONFIGS:
        for key in KEYS:
            os.environ.pop(key, None)
        os.environ.update({k_: v_ for k_, v_ in env.items() if not k_.startswith("_")})
        cs = int(env.get("_CS", 64))

        def fb():
            chunk_osdn(q, k, v, beta, eta=0.5, chunk_size=cs, **extra)[0].backward(do)

        try:
            o = chunk_osdn(q, k, v, beta, g=g, alpha=alpha, eta=0.5, initial_state=h0, chunk_size=cs)[0]
            gr = [o.float()] + [x.float() for x in torch.autograd.grad(o, full, do)]
            o = chunk_osdn(q, k, v, beta, eta=0.5, initial_state=h0, chunk_size=cs)[0]
            gp = [o.float()] + [x.float() for x in torch.autograd.grad(o, plain + [h0], do)]
            torch.cuda.synchronize()
        except Exception as e:  # a compile error or a fault: report and go on (a fault ends the run)
            print(json.dumps(dict(shape=(B, T, H, D), config=name, env=env, error=str(e)[:300])), flush=True)
            continue
        if ref is None:
            ref, ref_p = gr, gp
        rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))  # noqa: E731
        diff = {n: rel(a, b) for n, a, b in zip(names, gr, ref)}
        diff_plain = {n: rel(a, b) for n, a, b in zip(names_plain, gp, ref_p)}
        with torch.no_grad():
            tf = do_bench(lambda: chunk_osdn(q, k, v, beta, eta=0.5, chunk_size=cs, **extra)[0], warmup=25, rep=100,
                          return_mode="median")
        tfb = do_bench(fb, warmup=25, rep=100, grad_to_none=timed, return_mode="median")
        peak = peak_mib(fb, timed)
        kern = kernel_ms(fb)
        row = dict(shape=(B, T, H, D), config=name, env=env, timed="gated" if gated else "ungated", fwd_ms=tf,
                   fwdbwd_ms=tfb, peak_mib=peak,
                   max_grad_diff=max(*diff.values(), *diff_plain.values()), diff=diff, diff_plain=diff_plain,
                   kernels=kern, card=torch.cuda.get_device_name(0))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if os.environ.get("AB_FLA") == "1":  # the fla DeltaNet baseline of `osdn bench`, same run
        try:
            from fla.ops.delta_rule import chunk_delta_rule
            _reset_fla_tuning()  # its autotune keys leave out B and T: tune for this shape
            with torch.no_grad():
                tf = do_bench(lambda: chunk_delta_rule(q, k, v, beta)[0], warmup=25, rep=100, return_mode="median")
            tfb = do_bench(lambda: chunk_delta_rule(q, k, v, beta)[0].backward(do), warmup=25, rep=100,
                           grad_to_none=plain, return_mode="median")
            peak = peak_mib(lambda: chunk_delta_rule(q, k, v, beta)[0].backward(do), plain)
            row = dict(shape=(B, T, H, D), config="fla chunk_delta_rule", env={}, fwd_ms=tf, fwdbwd_ms=tfb,
                       peak_mib=peak, max_grad_diff=float("nan"),
                       kernels=kernel_ms(lambda: chunk_delta_rule(q, k, v, beta)[0].backward(do)),
                       fla_configs=_fla_tuned_configs(), card=torch.cuda.get_device_name(0))
            print(json.dumps(row), flush=True)
            rows.append(row)
        except Exception as e:
            print(json.dumps(dict(shape=(B, T, H, D), config="fla", error=str(e)[:300])), flush=True)
print(f"\n| B, T, H, K=V | config | env | fwd ms | fwd+bwd ms | peak MiB (fwd+bwd) | max diff of o and grads vs "
      f"{CONFIGS[0][0] if CONFIGS else '—'} (gated, APF, h0; and ungated, h0) |\n|---|---|---|---|---|---|---|")
for r_ in rows:
    print(f"| {', '.join(map(str, r_['shape']))} | {r_['config']} | {r_['env']} | {r_['fwd_ms']:.3f} | "
          f"{r_['fwdbwd_ms']:.3f} | {r_['peak_mib']:.0f} | {r_['max_grad_diff']:.1e} |")
