"""GPU debugging aid (not part of the API): run chunk_osdn / fused_recurrent_osdn forward and backward with a
device synchronisation after every kernel launch, to find which kernel faults (used with _gpu_debug.sh; see
reports/gpu-run-NVIDIA-H100-80GB-HBM3.log, runs 3 and 4). Usage: python osdn_fast/_gpu_debug.py bf16 128 chunk
"""
import os, sys, traceback
import torch
sys.path.insert(0, os.getcwd())
import osdn_fast.ops.osdn.chunk as C
dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[sys.argv[1]]
D = int(sys.argv[2]); which = sys.argv[3]
B, T, H = 1, 256, 2
# wrap kernels to sync after each launch
import osdn_fast.ops.osdn.dscan_chunk as DC
for mod, name in [(C, n) for n in ("dscan_fwd_kernel", "wy_inverse_kernel", "wy_inverse_blocked_kernel",
                                   "state_fwd_kernel", "state_out_kernel", "state_bwd_dul_kernel",
                                   "state_bwd_kernel", "state_bwd_dh_kernel",
                                   "state_bwd_grads_kernel", "state_bwd_grads_stored_kernel", "dscan_bwd_kernel")] + \
        [(DC, n) for n in ("dscan_chunk_prep_kernel", "dscan_chunk_fwd_kernel", "dscan_chunk_out_kernel",
                           "dscan_chunk_bwd_pre_kernel", "dscan_chunk_bwd_walk_kernel", "dscan_chunk_bwd_kernel",
                           "dscan_chunk_sum_kernel")]:
    kern = getattr(mod, name)
    class W:
        def __init__(s, k, n): s.k, s.n = k, n
        def __getitem__(s, grid):
            f = s.k[grid]
            def run(*a, **kw):
                r = f(*a, **kw); torch.cuda.synchronize(); print("  ok", s.n, flush=True); return r
            return run
    setattr(mod, name, W(kern, name))
from osdn_fast import chunk_osdn, fused_recurrent_osdn
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(B, T, H, D, device="cuda", generator=g).to(dt).requires_grad_()
k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", generator=g), dim=-1).to(dt).requires_grad_()
v = torch.randn(B, T, H, D, device="cuda", generator=g).to(dt).requires_grad_()
beta = torch.rand(B, T, H, device="cuda", generator=g).to(dt).requires_grad_()
fn = chunk_osdn if which == "chunk" else fused_recurrent_osdn
try:
    o = fn(q, k, v, beta, eta=0.5)[0]
    torch.cuda.synchronize(); print("fwd ok", flush=True)
    o.float().sum().backward(); torch.cuda.synchronize(); print("bwd ok", o.float().abs().mean().item(), q.grad.float().abs().mean().item(), flush=True)
except Exception as e:
    print("FAILED", type(e).__name__, str(e)[:300], flush=True)
