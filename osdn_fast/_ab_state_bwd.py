"""GPU A/B of the C3 state backward (not part of the API): split (state_bwd_dh_kernel + state_bwd_grads_kernel)
vs fused (state_bwd_kernel, OSDN_STATE_BWD=fused). Prints per-kernel CUDA time, the backward's wall time and
peak memory, and the largest gradient difference between the two (scaled by the gradient's max).
Usage: python osdn_fast/_ab_state_bwd.py [B T H D dtype gated]   (default 8 4096 16 128 bf16 1)
"""
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from osdn_fast import chunk_osdn  # noqa: E402

a = sys.argv[1:]
B, T, H, D = (int(x) for x in (a[:4] if len(a) >= 4 else (8, 4096, 16, 128)))
dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a[4] if len(a) > 4 else "bf16"]
gated = (a[5] if len(a) > 5 else "1") == "1"
gen = torch.Generator(device="cuda").manual_seed(0)
r = lambda *s: torch.randn(*s, device="cuda", generator=gen)
q = r(B, T, H, D).to(dt).requires_grad_()
k = torch.nn.functional.normalize(r(B, T, H, D), dim=-1).to(dt).requires_grad_()
v = r(B, T, H, D).to(dt).requires_grad_()
beta = torch.rand(B, T, H, device="cuda", generator=gen).to(dt).requires_grad_()
g = (torch.nn.functional.logsigmoid(r(B, T, H)) / 8).to(dt).requires_grad_() if gated else None
h0 = (0.1 * r(B, H, D, D)).requires_grad_()
do, dht = r(B, T, H, D).to(dt), r(B, H, D, D)
leaves = [x for x in (q, k, v, beta, g, h0) if x is not None]
names = ["dq", "dk", "dv", "dbeta"] + (["dg"] if gated else []) + ["dh0"]


def step():
    o, ht, _ = chunk_osdn(q, k, v, beta, g=g, eta=0.5, initial_state=h0, output_final_state=True)
    torch.autograd.backward([o, ht], [do, dht])
    out = [x.grad.float().clone() for x in leaves]
    for x in leaves:
        x.grad = None
    return out


res = {}
for mode in ("fused", "split"):
    os.environ["OSDN_STATE_BWD"] = mode
    step()  # compile
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(5):
        grads = step()
    e1.record()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    ker = {}
    for ev in prof.key_averages():
        if "state_" in ev.key or "dscan" in ev.key or "wy_" in ev.key:
            ker[ev.key] = ev.device_time_total / 1e3 / 3 if hasattr(ev, "device_time_total") else ev.cuda_time_total / 1e3 / 3
    res[mode] = grads
    print(f"[{mode}] {dt} B={B} T={T} H={H} D={D} gated={gated}: fwd+bwd {e0.elapsed_time(e1) / 5:.2f} ms, "
          f"peak {peak:.0f} MiB", flush=True)
    for n, ms in sorted(ker.items(), key=lambda x: -x[1]):
        print(f"    {n:32s} {ms:7.3f} ms")
for n, a_, b_ in zip(names, res["split"], res["fused"]):
    sc = float(b_.abs().max())
    print(f"  {n:6s} max|split - fused| / max|fused| = {float((a_ - b_).abs().max()) / max(sc, 1e-30):.2e}"
          f"  finite={bool(torch.isfinite(a_).all())}")
