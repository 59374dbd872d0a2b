"""Where a decoding step's time goes on a CUDA machine: ``python -m osdn_fast._decode_host [N]``.

One step is ``fused_recurrent_osdn(q, k, v, beta, eta=0.5, initial_state=h, initial_precond=d,
output_final_state=True)`` with T = 1, B = 8, H = 16, K = V = 128, bf16, under ``torch.no_grad`` (the decoding
case of ``osdn bench``, spec E1–E8 token by token). Prints microseconds per call, medians of 5 repeats of N calls
(default 2000):

(a) ours, wall time: N steps, one ``synchronize`` at the end;
(b) fla's ``fused_recurrent_delta_rule`` the same way (skipped where fla is not importable; ``bash
    osdn_fast/gpu_run.sh setup`` installs it into /tmp/site, which that script puts on PYTHONPATH);
(c) ours, host only: the same steps with the kernel launch stubbed out (validation of spec §6, defaults,
    output allocation: our Python);
(d) Triton's launch alone: ``fused_recurrent_fwd_kernel[grid](...)`` with the arguments of one step prepared
    once (JITFunction.run: binding, specialisation, cache lookup, launcher), host time of the loop and wall time
    after the ``synchronize``;
(e) the compiled kernel's runner (``CompiledKernel[grid](...)``) called directly, skipping JITFunction.run: the
    floor a cached launcher could reach, before the cost of its own cache key (a Python key over the 17
    arguments' dtypes and alignments, tried, cost back about 8 of the 10-13 µs on H100/H200 hosts: not used);
(f) device time of one step, ours and fla's: 20 steps captured in a CUDA graph, replayed N / 20 times.

(a) ≈ max(host, device) per step; host ≈ (c) + (d) when the device keeps up.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

B, H, D, REPEATS = 8, 16, 128, 5


def per_call_us(fn, n: int, sync: bool = True) -> float:
    """Median over REPEATS of (time of n calls of ``fn``) / n, in µs; ``sync``: synchronize before stopping."""
    ts = []
    for _ in range(REPEATS):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if sync:
            torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / n * 1e6)
    torch.cuda.synchronize()
    return statistics.median(ts)


def graph_us(fn, n: int, steps: int = 20) -> float:
    """Device time per call of ``fn``: ``steps`` calls captured in one CUDA graph, replayed n // steps times."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(steps):
            fn()
    return per_call_us(g.replay, max(1, n // steps)) / steps


class _Record:
    """Stands in for the kernel: records one launch's grid and arguments, launches nothing."""

    def __init__(self):
        self.grid = self.args = self.kwargs = None

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grid, self.args, self.kwargs = grid, args, kwargs
        return launch


def main(n: int = 2000) -> None:
    import osdn_fast.ops.osdn.fused_recurrent as fr
    from osdn_fast import fused_recurrent_osdn

    dev, bf16 = "cuda", torch.bfloat16
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, 1, H, D, device=dev, dtype=bf16) for _ in range(3))
    k = k / k.float().norm(dim=-1, keepdim=True).to(bf16)
    beta = torch.rand(B, 1, H, device=dev, dtype=bf16)
    h0 = torch.randn(B, H, D, D, device=dev) * 0.1
    d0 = torch.ones(B, H, D, device=dev)

    def ours():
        return fused_recurrent_osdn(q, k, v, beta, eta=0.5, initial_state=h0, initial_precond=d0,
                                    output_final_state=True)

    try:
        from fla.ops.delta_rule import fused_recurrent_delta_rule

        def fla():
            return fused_recurrent_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    except Exception as e:  # pragma: no cover - depends on the machine
        fla = None
        print(f"fla not importable ({type(e).__name__}: {e}); (b) and fla's (f) skipped")

    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; decoding step B={B}, H={H}, K=V={D}, "
          f"bf16, T=1; µs per call, median of {REPEATS} x {n} calls")
    with torch.no_grad():
        for _ in range(20):  # compile and fill the caches
            ours()
            if fla:
                fla()
        print(f"(a) ours, wall (1 sync / {n}):       {per_call_us(ours, n):8.2f}")
        if fla:
            print(f"(b) fla, wall (1 sync / {n}):        {per_call_us(fla, n):8.2f}")

        kernel, rec = fr.fused_recurrent_fwd_kernel, _Record()
        fr.fused_recurrent_fwd_kernel = rec
        try:
            print(f"(c) ours, host only (launch stubbed): {per_call_us(ours, n):8.2f}")
        finally:
            fr.fused_recurrent_fwd_kernel = kernel
        grid, args, kwargs = rec.grid, rec.args, rec.kwargs

        def launch():
            return kernel[grid](*args, **kwargs)

        print(f"(d) Triton launch, host loop:         {per_call_us(launch, n, sync=False):8.2f}")
        print(f"    Triton launch, wall (1 sync):     {per_call_us(launch, n):8.2f}")

        compiled = launch()
        names = kernel.arg_names
        flat = list(args) + [kwargs[a] for a in names[len(args):]]
        runner = compiled[tuple(grid) + (1,) * (3 - len(grid))]  # some Triton versions index grid[2]
        stream = torch.cuda.current_stream().cuda_stream

        def direct():
            runner(*flat, stream=stream)

        print(f"(e) compiled runner, host loop:       {per_call_us(direct, n, sync=False):8.2f}")
        print(f"(f) device time per step, ours:       {graph_us(ours, n):8.2f}")
        if fla:
            print(f"    device time per step, fla:        {graph_us(fla, n):8.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
