"""GPU A/B of kernel settings chosen by environment variables (not part of the API).

Usage: python osdn_fast/_ab_env.py NAME=VAR=VAL,VAR=VAL ...   (the first config is the baseline)

For each config, at (8, 4096, 16, 128) bf16: chunk_osdn forward and forward+backward time (do_bench medians,
η = 0.5, no gate: the `osdn bench` case), per-kernel CUDA time of one forward+backward (torch.profiler), and with
a gate, APF and an initial state the largest gradient difference to the baseline config, scaled by the
gradient's max. Prints one JSON line per config and a markdown table.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from triton.testing import do_bench  # noqa: E402

from osdn_fast import chunk_osdn  # noqa: E402

CONFIGS = []
for arg in sys.argv[1:]:
    name, _, rest = arg.partition("=")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    CONFIGS.append((name, env))
KEYS = sorted({k for _, env in CONFIGS for k in env})
B, T, H, D = 8, 4096, 16, 128
dt = torch.bfloat16
gen = torch.Generator(device="cuda").manual_seed(0)
r = lambda *s: torch.randn(*s, device="cuda", generator=gen)
q = r(B, T, H, D).to(dt).requires_grad_()
k = torch.nn.functional.normalize(r(B, T, H, D), dim=-1).to(dt).requires_grad_()
v = r(B, T, H, D).to(dt).requires_grad_()
beta = torch.rand(B, T, H, device="cuda", generator=gen).to(dt).requires_grad_()
g = (torch.nn.functional.logsigmoid(r(B, T, H)) / 8).to(dt).requires_grad_()
alpha = torch.rand(B, T, H, device="cuda", generator=gen).to(dt).requires_grad_()
h0 = (0.1 * r(B, H, D, D)).requires_grad_()
do = r(B, T, H, D).to(dt)
full = [q, k, v, beta, g, alpha, h0]
names = ["dq", "dk", "dv", "dbeta", "dg", "dalpha", "dh0"]


def grads():
    o = chunk_osdn(q, k, v, beta, g=g, alpha=alpha, eta=0.5, initial_state=h0)[0]
    out = torch.autograd.grad(o, full, do)
    return [x.float() for x in out]


def fb():
    chunk_osdn(q, k, v, beta, eta=0.5)[0].backward(do)


rows, ref = [], None
for name, env in CONFIGS:
    for key in KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        gr = grads()
        torch.cuda.synchronize()
    except Exception as e:  # a compile error or a fault: report and go on (a fault ends the run)
        print(json.dumps(dict(config=name, env=env, error=str(e)[:300])), flush=True)
        continue
    if ref is None:
        ref = gr
    diff = {n: float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for n, a, b in zip(names, gr, ref)}
    with torch.no_grad():
        tf = do_bench(lambda: chunk_osdn(q, k, v, beta, eta=0.5)[0], warmup=25, rep=100, return_mode="median")
    tfb = do_bench(fb, warmup=25, rep=100, grad_to_none=[q, k, v, beta], return_mode="median")
    for x in (q, k, v, beta):
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fb()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fb()
        torch.cuda.synchronize()
    kern = {}
    for ev in prof.key_averages():
        if ev.device_type == torch.autograd.DeviceType.CUDA and "kernel" in ev.key and "at::" not in ev.key:
            kern[ev.key] = round(ev.device_time_total / 1e3, 3)
    row = dict(config=name, env=env, fwd_ms=tf, fwdbwd_ms=tfb, peak_mib=peak, max_grad_diff=max(diff.values()), diff=diff,
               kernels=kern, card=torch.cuda.get_device_name(0))
    print(json.dumps(row), flush=True)
    rows.append(row)
if os.environ.get("AB_FLA") == "1":  # the fla DeltaNet baseline of `osdn bench`, same run
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        with torch.no_grad():
            tf = do_bench(lambda: chunk_delta_rule(q, k, v, beta)[0], warmup=25, rep=100, return_mode="median")
        tfb = do_bench(lambda: chunk_delta_rule(q, k, v, beta)[0].backward(do), warmup=25, rep=100,
                       grad_to_none=[q, k, v, beta], return_mode="median")
        for x in (q, k, v, beta):
            x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        chunk_delta_rule(q, k, v, beta)[0].backward(do)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        row = dict(config="fla chunk_delta_rule", env={}, fwd_ms=tf, fwdbwd_ms=tfb, peak_mib=peak,
                   max_grad_diff=float("nan"),
                   card=torch.cuda.get_device_name(0))
        print(json.dumps(row), flush=True)
        rows.append(row)
    except Exception as e:
        print(json.dumps(dict(config="fla", error=str(e)[:300])), flush=True)
print(f"\n| config | env | fwd ms | fwd+bwd ms | peak MiB (fwd+bwd) | max grad diff vs {CONFIGS[0][0]} (gated, APF, h0) |"
      "\n|---|---|---|---|---|---|")
for r_ in rows:
    print(f"| {r_['config']} | {r_['env']} | {r_['fwd_ms']:.3f} | {r_['fwdbwd_ms']:.3f} | {r_['peak_mib']:.0f} | "
          f"{r_['max_grad_diff']:.1e} |")
