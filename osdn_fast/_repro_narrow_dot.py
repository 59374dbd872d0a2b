"""GPU reproducer search for the Triton 3.6 fault with narrow 16-bit dots on Hopper (not part of the API).

Seen in this project: ``state_fwd_kernel`` with value blocks of 16/32 columns (H100: illegal memory access at
16, wrong results at 32, K = 128) and ``state_bwd_grads_kernel`` with 32 key columns per program (H200: illegal
memory access). Blocks of >= 64 columns work, so the kernels use them; 32-column blocks would double the
programs of the serial state kernels (osdn_fast/NOTES.md, next steps).

Result (H200, triton 3.6, reports/gpu-run-NVIDIA-H200-run5.log, call 1): every case below that ran computes
correctly (relative error <= 3e-7): N = 32 and 16 for all four patterns, bf16 and fp16, 4 and 8 warps (of N = 64
only three cases before the stage's time limit), while the whole chunk path with 32-column value blocks (OSDN_BV16=32) faulted
again in the same session (call 2). The fault needs more of the kernels' context than one dot; the next
reduction would add their other dots, masks and loop-carried state.

This script runs the dot shapes those kernels use, one (pattern, N, dtype) per subprocess (a fault poisons the
CUDA context), each on a 64-row tile with 4 or 8 warps, and compares with torch in float32:

    ab    : A [64, 128] @ B [128, N]                (K h, Q h)
    atb   : trans(A [128, 64]) @ B [128, N]          (K̃ᵀ U: the state update, A loaded [64, 128] then transposed)
    abt   : A [64, 64] @ trans(B [N, 64])            (dO hᵀ with h rows [N, 64])
    mm    : A [64, 64] @ B [64, N]                   (M R, G K̃ over a column block)

Usage (on a GPU): python osdn_fast/_repro_narrow_dot.py            (all cases, a table at the end)
                  python osdn_fast/_repro_narrow_dot.py one PATTERN N DTYPE WARPS
                  python osdn_fast/_repro_narrow_dot.py walks      (the failing float16 examples of the 32-column
                                                                    walks under several warps / stages)

Upstream: Triton issues #10486 and #11366 report illegal memory accesses on Hopper (sm_90) from kernels with several
``tl.dot`` on 32-wide blocks at 4 warps, with Triton 3.6-3.7.1 and not with 3.5.1; the same family as this.
"""
import json
import os
import subprocess
import sys

PATTERNS = ("ab", "atb", "abt", "mm")


def one(pattern: str, N: int, dtype: str, warps: int) -> dict:
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def kern(a, b, c, PAT: tl.constexpr, M: tl.constexpr, KD: tl.constexpr, N: tl.constexpr):
        om = tl.arange(0, M)
        ok = tl.arange(0, KD)
        on = tl.arange(0, N)
        if PAT == 0:  # A [M, KD] @ B [KD, N] ("ab" with KD = 128, "mm" with KD = 64)
            x = tl.load(a + om[:, None] * KD + ok[None, :])
            y = tl.load(b + ok[:, None] * N + on[None, :])
            r = tl.dot(x, y)
        elif PAT == 1:  # trans(A [KD, M] stored as [M, KD]^T ...): load [M, KD], transpose, times B [M, N]
            x = tl.load(a + om[:, None] * KD + ok[None, :])   # [M, KD]
            y = tl.load(b + om[:, None] * N + on[None, :])    # [M, N]
            r = tl.dot(tl.trans(x), y)                        # [KD, N]
        else:  # A [M, KD] @ trans(B [N, KD])
            x = tl.load(a + om[:, None] * KD + ok[None, :])
            y = tl.load(b + on[:, None] * KD + ok[None, :])
            r = tl.dot(x, tl.trans(y))
        if PAT == 1:
            tl.store(c + ok[:, None] * N + on[None, :], r)
        else:
            tl.store(c + om[:, None] * N + on[None, :], r)

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1, to check this script
    M = 64
    KD = 64 if pattern in ("mm", "abt") else 128
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=dev, generator=g).to(dt)
    pat = {"ab": 0, "mm": 0, "atb": 1, "abt": 2}[pattern]
    if pattern == "ab" or pattern == "mm":
        A, B = r(M, KD), r(KD, N)
        ref = A.float() @ B.float()
        out = torch.empty(M, N, device=dev, dtype=torch.float32)
    elif pattern == "atb":
        A, B = r(M, KD), r(M, N)
        ref = A.float().T @ B.float()
        out = torch.empty(KD, N, device=dev, dtype=torch.float32)
    else:
        A, B = r(M, KD), r(N, KD)
        ref = A.float() @ B.float().T
        out = torch.empty(M, N, device=dev, dtype=torch.float32)
    kern[(1,)](A, B, out, PAT=pat, M=M, KD=KD, N=N, num_warps=warps)
    if dev == "cuda":
        torch.cuda.synchronize()
    err = float((out - ref).abs().max() / ref.abs().max())
    return dict(pattern=pattern, N=N, dtype=dtype, warps=warps, rel_err=err, ok=err < 2e-2,
                card=torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (interpreter)",
                triton=triton.__version__)


# The two failing examples of tests/test_fast_chunk.py's float16 property with 32-column walks (tenth session, H200,
# Triton 3.6): T = K = V = 1, chunk 64. With OSDN_DH_BV=32 (tiled dh walk) ∂L/∂h0 came out NaN; with OSDN_FWD_BV=32
# (forward walk) the run met an illegal memory access. Both pass in the interpreter.
WALK_EXAMPLE = dict(q=[[[[0.12573022]]]], v=[[[[-0.13210486]]]], beta=[[[0.04097352]]], k=[[[[1.03194322]]]],
                    eta=1.7342355968276713)
WALK_CASES = [  # (name, env, with h0 and the L2 norm)
    ("dh32-w4-s2", dict(OSDN_DH_BV="32"), True), ("dh32-w4-s1", dict(OSDN_DH_BV="32", OSDN_BWD_DH_STAGES="1"), True),
    ("dh32-w8-s2", dict(OSDN_DH_BV="32", OSDN_BWD_DH_WARPS="8"), True),
    ("dh32-w2-s2", dict(OSDN_DH_BV="32", OSDN_BWD_DH_WARPS="2"), True),
    ("fwd32-w4-s3", dict(OSDN_FWD_BV="32"), False), ("fwd32-w4-s1", dict(OSDN_FWD_BV="32", OSDN_FWD_STAGES="1"), False),
    ("fwd32-w8-s3", dict(OSDN_FWD_BV="32", OSDN_FWD_WARPS="8"), False),
    ("fwd32-w2-s3", dict(OSDN_FWD_BV="32", OSDN_FWD_WARPS="2"), False),
    ("default", {}, True),
]


def walk_one(with_h0: bool) -> dict:
    """One chunk_osdn forward+backward of WALK_EXAMPLE in float16 (chunk 64) against the float64 reference."""
    import numpy as np
    import torch
    from osdn_fast import chunk_osdn
    from osdn_fast.compare import compare
    kw = {n: np.asarray(x) if isinstance(x, list) else x for n, x in WALK_EXAMPLE.items()}
    if with_h0:
        kw.update(initial_state=np.asarray([[[[1.30400005]]]]), use_qk_l2norm_in_kernel=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    errs, _, _ = compare(chunk_osdn, kw, torch.float16, dev, grads=True, chunk_size=64)
    return {n: e["max_abs"] for n, e in errs.items()}


def walks() -> None:
    """Each case of WALK_CASES in its own process (a fault poisons the CUDA context): max abs errors or the error."""
    for name, env, h0 in WALK_CASES:
        cmd = [sys.executable, __file__, "walk", "1" if h0 else "0"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo root: osdn_fast importable
        path = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=200,
                           env=dict(os.environ, PYTHONPATH=path, **env))
        line = [x for x in p.stdout.splitlines() if x.startswith("{")]
        res = line[-1] if line else "FAILED: " + ((p.stderr.strip().splitlines() or ["?"])[-1][:200])
        print(f"walk case {name} {env}: {res}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "walk":
        print(json.dumps(walk_one(sys.argv[2] == "1")), flush=True)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "walks":
        walks()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        pattern, N, dtype, warps = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(json.dumps(one(pattern, N, dtype, warps)), flush=True)
        return
    rows = []
    for N in (32, 16, 64):  # the suspect width first: a stage time limit may stop the run
        for pattern in PATTERNS:
            for dtype in ("bf16", "fp16"):
                for warps in (4, 8):
                    cmd = [sys.executable, __file__, "one", pattern, str(N), dtype, str(warps)]
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                       env=dict(os.environ, CUDA_LAUNCH_BLOCKING="1"))
                    line = [x for x in p.stdout.splitlines() if x.startswith("{")]
                    row = json.loads(line[-1]) if line else dict(
                        pattern=pattern, N=N, dtype=dtype, warps=warps, ok=False,
                        error=(p.stderr.strip().splitlines() or ["?"])[-1][:160])
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print("\n| pattern | N | dtype | warps | result |\n|---|---|---|---|---|")
    for r_ in rows:
        res = f"rel err {r_['rel_err']:.1e}" if "rel_err" in r_ else f"FAILED: {r_.get('error')}"
        print(f"| {r_['pattern']} | {r_['N']} | {r_['dtype']} | {r_['warps']} | {res} |")


if __name__ == "__main__":
    main()
