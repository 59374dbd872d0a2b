"""Nsight Compute (ncu) profile of one forward+backward of ``chunk_osdn`` (C1–C3), kernel by kernel.

This is a profile, not a benchmark. ncu serialises the launches and replays each kernel once per group
of counters (caches flushed between passes, ncu's default ``--cache-control all``), so its durations
compare the Triton kernels of one report with each other; they are not the wall-clock times of
``osdn bench``. Measured for every launch of the kernels ``state_*``, ``dscan_*`` and ``wy_*`` inside
one ``cudaProfilerStart``/``cudaProfilerStop`` range (one forward and one backward after two warm-up
steps): duration, SM, memory and DRAM throughput (% of peak), achieved occupancy, registers per thread,
local-memory (register spill) bytes loaded and stored at L1, DRAM bytes read and written, grid, block
and shared memory per block.

Two modes (``bash osdn_fast/gpu_run.sh ncu`` runs both)::

    ncu --profile-from-start off --clock-control none --target-processes all \\
        --kernel-name 'regex:(state|dscan|wy)_' --print-units base --csv --page raw \\
        --log-file ncu.csv --metrics <METRICS, comma-separated> \\
        python3 -m osdn_fast.profile_ncu run [--B 8 --T 4096 --H 16 --K 128 --eta 0.5]
    python3 -m osdn_fast.profile_ncu summarize ncu.csv --device NAME --out reports/ncu-NAME.md

The CSV is ncu's raw page: ``==PROF==`` lines, a header ("ID", "Process ID", ..., "Kernel Name", ...,
"Block Size", "Grid Size", "Device", "CC", then one column per metric), a units row (empty ID), then
one row per launch, every field quoted, numbers possibly with thousands separators. The parser takes
units from the units row whatever ``--print-units`` was (ncu's prefixes are decimal: Kbyte = 1000 byte)
and writes "—" for a metric that is absent or "n/a".
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["KERNEL_REGEX", "METRICS", "run", "parse_raw_csv", "summarize", "main"]

KERNEL_REGEX = "regex:(state|dscan|wy)_"
# ncu 2025.3 with --print-units base writes "ns" (seen on an H200); older versions "nsecond"
_TO_US = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6, "ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
_TO_BYTE = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12}
_FIXED = {"ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
          "Grid Size", "Device", "CC"}
_MISSING = "—"
_COLUMNS = [  # header, metric, format, scale, summed in the total row
    ("time (us)", "gpu__time_duration.sum", "{:.1f}", 1, True),
    ("SM %", "sm__throughput.avg.pct_of_peak_sustained_elapsed", "{:.1f}", 1, False),
    ("mem %", "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed", "{:.1f}", 1, False),
    ("DRAM %", "dram__throughput.avg.pct_of_peak_sustained_elapsed", "{:.1f}", 1, False),
    ("occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active", "{:.1f}", 1, False),
    ("regs/thread", "launch__registers_per_thread", "{:.0f}", 1, False),
    ("local ld (B)", "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum", "{:,.0f}", 1, True),
    ("local st (B)", "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum", "{:,.0f}", 1, True),
    ("DRAM rd (MB)", "dram__bytes_read.sum", "{:.1f}", 1e-6, True),
    ("DRAM wr (MB)", "dram__bytes_write.sum", "{:.1f}", 1e-6, True),
]
METRICS = [c[1] for c in _COLUMNS] + ["launch__grid_size", "launch__block_size", "launch__shared_mem_per_block_static",
                                      "launch__shared_mem_per_block_dynamic"]  # the --metrics list of ncu


def run(B: int = 8, T: int = 4096, H: int = 16, K: int = 128, eta: float = 0.5, warmup: int = 2,
        seed: int = 0) -> None:
    """One forward+backward of ``chunk_osdn`` (C1–C3) inside ``cudaProfilerStart``/``Stop``, for ncu.

    Parameters
    ----------
    B, T, H, K : batch, length, heads, head dimension (K = V), bfloat16 inputs on cuda
    eta : hyper step η of E8 (learner on)
    warmup : untimed forward+backward steps before the range (Triton compilation)
    seed : seed of the random inputs (q, k L2-normalised; β = sigmoid(randn))
    """
    import torch

    from osdn_fast import chunk_osdn

    if not torch.cuda.is_available():
        raise SystemExit("profile_ncu run: no CUDA device")
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, device="cuda", generator=gen)

    unit = torch.nn.functional.normalize
    q = unit(rnd(B, T, H, K), dim=-1).bfloat16().requires_grad_()
    k = unit(rnd(B, T, H, K), dim=-1).bfloat16().requires_grad_()
    v = rnd(B, T, H, K).bfloat16().requires_grad_()
    beta = torch.sigmoid(rnd(B, T, H)).bfloat16().requires_grad_()
    do = rnd(B, T, H, K).bfloat16()

    def step():
        for x in (q, k, v, beta):
            x.grad = None
        chunk_osdn(q, k, v, beta, eta=eta)[0].backward(do)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    cudart = torch.cuda.cudart()
    cudart.cudaProfilerStart()
    step()
    torch.cuda.synchronize()
    cudart.cudaProfilerStop()
    print(f"profile_ncu: one profiled forward+backward of chunk_osdn, (B, T, H, K=V) = ({B}, {T}, {H}, {K}), "
          f"bf16, eta={eta}, on {torch.cuda.get_device_name(0)}", flush=True)


def _number(text: str, unit: str) -> Optional[float]:
    try:
        x = float(text.strip().replace(",", ""))
    except ValueError:  # "", "n/a"
        return None
    base = unit.strip().split("/")[0]  # "Kbyte/block" -> "Kbyte"
    return x * _TO_US.get(base, _TO_BYTE.get(base, 1.0))


def _short(name: str) -> str:
    """Triton function name of an ncu kernel name ('void ns::f<...>(int, ...)' -> 'f')."""
    short = re.sub(r"<.*>", "", name.split("(")[0]).strip().split(" ")[-1]
    return short.split("::")[-1] or name


def parse_raw_csv(text: str) -> List[Dict]:
    """Launches of an ``ncu --csv --page raw`` output, for the C1–C3 kernel profile.

    Parameters
    ----------
    text : the CSV with whatever ncu printed around it (``==PROF==`` lines, the profiled program's output)

    Returns
    -------
    list of dict, in launch order: ``id``, ``kernel`` (short name), ``block``, ``grid`` (strings as ncu
    prints them) and ``metrics`` (metric name -> float or None; times in µs, sizes in bytes, else as printed)
    """
    rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("==")))
    head = next((i for i, r in enumerate(rows) if r[:1] == ["ID"] and "Kernel Name" in r), None)
    if head is None:
        return []
    header, units, out = rows[head], {}, []
    for r in rows[head + 1:]:
        if len(r) != len(header) or r == header:
            continue
        rec = dict(zip(header, r))
        if not rec["ID"].strip():
            units = rec
            continue
        if not rec["ID"].strip().isdigit():
            continue
        out.append(dict(id=int(rec["ID"]), kernel=_short(rec["Kernel Name"]), block=rec.get("Block Size", ""),
                        grid=rec.get("Grid Size", ""),
                        metrics={h: _number(rec[h], units.get(h, "")) for h in header if h not in _FIXED}))
    return sorted(out, key=lambda d: d["id"])


def _fmt(x: Optional[float], spec: str = "{:.1f}") -> str:
    return _MISSING if x is None else spec.format(x)


def summarize(csv_text: str, device: str, command: str = "", ncu_version: str = "") -> str:
    """Markdown report (one row per launch, then totals) of the ncu profile of C1–C3's forward+backward.

    Parameters
    ----------
    csv_text : output of ``ncu --csv --page raw`` (see the module docstring)
    device : card name for the header
    command : the ncu command line, for the header
    ncu_version : ncu's version line, for the header

    Returns
    -------
    str : markdown; measured numbers only
    """
    launches = parse_raw_csv(csv_text)
    if not launches:
        raise ValueError("no ncu raw-page rows found (no header, or no kernel matched the filter)")
    lines = ["# ncu profile of chunk_osdn forward+backward on " + device, "",
            "A profile, not a benchmark: ncu replays every kernel (caches flushed between passes), so the durations "
            "compare these kernels with each other, not with `osdn bench`. Clocks were left to the driver "
            "(`--clock-control none`).", "", f"- card: {device}", f"- ncu: {ncu_version or _MISSING}",
            f"- command: `{command or _MISSING}`", f"- launches: {len(launches)}",
            "- columns: time in µs; SM, memory (gpu__compute_memory_throughput) and DRAM throughput and achieved "
            "occupancy in % of peak; local ld/st: L1 local-memory bytes (register spills); DRAM in MB (10^6 byte); "
            "smem: static + dynamic shared memory per block, bytes", "",
            "| " + " | ".join(["ID", "kernel"] + [c[0] for c in _COLUMNS] + ["grid", "block", "smem (B)"]) + " |",
            "|" + "---|" * (len(_COLUMNS) + 5)]
    for d in launches:
        m = d["metrics"]
        smem = [m.get(n) for n in ("launch__shared_mem_per_block_static", "launch__shared_mem_per_block_dynamic")]
        smem = None if all(x is None for x in smem) else sum(x or 0.0 for x in smem)
        lines.append(_table_row([str(d["id"]), d["kernel"]], m, [
            d["grid"] or _fmt(m.get("launch__grid_size"), "{:.0f}"),
            d["block"] or _fmt(m.get("launch__block_size"), "{:.0f}"), _fmt(smem, "{:,.0f}")]))
    total = {}
    for _, name, _, _, summed in _COLUMNS:
        xs = [d["metrics"].get(name) for d in launches]
        total[name] = (None if None in xs else sum(xs)) if summed else ""
    lines.append(_table_row(["", "**total**"], total, ["", "", ""]))
    return "\n".join(lines) + "\n"


def _table_row(first: List[str], m: Dict, last: List[str]) -> str:
    cells = []
    for _, name, spec, scale, _ in _COLUMNS:
        x = m.get(name)
        cells.append(x if x == "" else _fmt(None if x is None else x * scale, spec))
    return "| " + " | ".join(first + cells + last) + " |"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python3 -m osdn_fast.profile_ncu run|summarize ...``: the ncu profile of C1–C3 (module docstring).

    Parameters
    ----------
    argv : command-line arguments
    """
    ap = argparse.ArgumentParser(prog="python3 -m osdn_fast.profile_ncu", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="one forward+backward inside cudaProfilerStart/Stop (launch under ncu)")
    for name, default in (("B", 8), ("T", 4096), ("H", 16), ("K", 128)):
        r.add_argument(f"--{name}", type=int, default=default)
    r.add_argument("--eta", type=float, default=0.5)
    s = sub.add_parser("summarize", help="markdown table from ncu --csv --page raw output")
    s.add_argument("csv", type=Path)
    s.add_argument("--device", required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--command", default="", help="the ncu command line, for the header")
    s.add_argument("--ncu-version", default="")
    a = ap.parse_args(argv)
    if a.mode == "run":
        run(a.B, a.T, a.H, a.K, a.eta)
        return 0
    text = a.csv.read_text(encoding="utf-8", errors="replace")
    try:
        md = summarize(text, a.device, a.command, a.ncu_version)
    except ValueError as exc:
        notes = [line for line in text.splitlines() if line.startswith("==")][-10:]
        print(f"profile_ncu summarize: {a.csv}: {exc}", *notes, sep="\n")
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md, encoding="utf-8")
    print(f"profile_ncu: wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
