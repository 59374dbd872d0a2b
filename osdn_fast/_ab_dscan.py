"""GPU A/B of the preconditioner scan (not part of the API): token-serial (OSDN_DSCAN=token) vs the chunk
form C1 at scan chunk 64 / 32 / 16 and 2 / 4 / 8 warps, and the state part at chunk 32 (state32); chunk_osdn
forward+backward in bf16 (η = 0.5), per shape.
Usage: python osdn_fast/_ab_dscan.py   (prints one JSON line per (shape, config) and a markdown table)
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from triton.testing import do_bench  # noqa: E402

from osdn_fast import chunk_osdn  # noqa: E402

SHAPES = [(8, 4096, 16, 128), (1, 32768, 16, 128), (16, 2048, 32, 64)]
CONFIGS = {"token": dict(OSDN_DSCAN="token")}
for _c, _w in ((64, 8), (32, 4), (32, 8), (16, 2), (16, 4)):
    # chunk-parallel kernels (prep, write keys, backward) with _w warps; the two serial carries with 4
    CONFIGS[f"chunk{_c}-w{_w}"] = dict(OSDN_DSCAN="chunk", OSDN_DSCAN_CHUNK=str(_c), OSDN_DSCAN_WARPS=str(_w),
                                       OSDN_DSCAN_FWD_WARPS="4")
# the state part (C3) at chunk 32 instead of 64: smaller [C, K] accumulators in state_bwd_grads_kernel
CONFIGS["state32"] = dict(_CS="32")
KEYS = sorted({k for c in CONFIGS.values() for k in c if not k.startswith("_")})
rows = []
for (B, T, H, D) in SHAPES:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, T, H, D, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", generator=gen), dim=-1)
    k = k.to(torch.bfloat16).requires_grad_()
    v = torch.randn(B, T, H, D, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_()
    beta = torch.rand(B, T, H, device="cuda", generator=gen).to(torch.bfloat16).requires_grad_()
    do = torch.randn(B, T, H, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    ref = None
    for name, env in CONFIGS.items():
        for key in KEYS:
            os.environ.pop(key, None)
        os.environ.update({k: v for k, v in env.items() if not k.startswith("_")})
        cs = int(env.get("_CS", 64))

        def fb():
            chunk_osdn(q, k, v, beta, eta=0.5, chunk_size=cs)[0].backward(do)

        for x in (q, k, v, beta):
            x.grad = None  # gradients accumulate: each config starts from none
        fb()
        grads = [x.grad.float().clone() for x in (q, k, v, beta)]
        if ref is None:
            ref = grads
        diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for a, b in zip(grads, ref))
        with torch.no_grad():
            tf = do_bench(lambda: chunk_osdn(q, k, v, beta, eta=0.5, chunk_size=cs)[0], warmup=50, rep=200,
                          return_mode="median")
        tfb = do_bench(fb, warmup=50, rep=200, grad_to_none=[q, k, v, beta], return_mode="median")
        r = dict(shape=(B, T, H, D), config=name, fwd_ms=tf, fwdbwd_ms=tfb, grad_diff_vs_token=diff,
                 card=torch.cuda.get_device_name(0))
        print(json.dumps(r), flush=True)
        rows.append(r)
print("\n| B, T, H, K=V | config | fwd ms | fwd+bwd ms | max grad diff vs token (scaled) |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {', '.join(map(str, r['shape']))} | {r['config']} | {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | "
          f"{r['grad_diff_vs_token']:.1e} |")
