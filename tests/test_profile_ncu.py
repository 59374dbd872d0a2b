"""osdn_fast.profile_ncu: the parser and the markdown of an ``ncu --csv --page raw`` output, on a synthetic CSV
in ncu's layout (no GPU, no ncu): ==PROF== lines and program output around it, a units row, quoted numbers
with thousands separators, scaled units, "n/a", and a metric that was not collected."""

import pytest

from osdn_fast.profile_ncu import METRICS, main, parse_raw_csv, summarize

_FIXED = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
          "Grid Size", "Device", "CC"]
# dram__bytes_write.sum was not collected (absent column).
_COLS = [m for m in METRICS if m != "dram__bytes_write.sum"]
_UNITS = {"gpu__time_duration.sum": "usecond", "launch__registers_per_thread": "register/thread",
          "launch__grid_size": "block", "launch__block_size": "thread",
          "launch__shared_mem_per_block_static": "Kbyte/block", "launch__shared_mem_per_block_dynamic": "byte/block",
          "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum": "Kbyte", "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum": "byte",
          "dram__bytes_read.sum": "Mbyte"}


def _row(fields):
    return ",".join(f'"{f}"' for f in fields)


def _launch(i, name, block, grid, values):
    return _row([str(i), "4242", "python3", "127.0.0.1", name, "1", "7", block, grid, "0", "9.0"]
                + [values.get(c, "n/a") for c in _COLS])


_A = {"gpu__time_duration.sum": "1,234.5", "sm__throughput.avg.pct_of_peak_sustained_elapsed": "61.25",
      "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": "70.1",
      "dram__throughput.avg.pct_of_peak_sustained_elapsed": "55.0",
      "sm__warps_active.avg.pct_of_peak_sustained_active": "12.4", "launch__registers_per_thread": "255",
      "launch__grid_size": "2,048", "launch__block_size": "128", "launch__shared_mem_per_block_static": "34.816",
      "launch__shared_mem_per_block_dynamic": "0", "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum": "1,024",
      "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum": "512", "dram__bytes_read.sum": "1,500.25"}
_B = dict(_A, **{"gpu__time_duration.sum": "100", "sm__warps_active.avg.pct_of_peak_sustained_active": "n/a",
                 "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum": "0",
                 "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum": "0"})

CSV = "\n".join([
    "==PROF== Connected to process 4242 (/usr/bin/python3.12)",
    "profile_ncu: one profiled forward+backward of chunk_osdn",
    '==PROF== Profiling "state_fwd_kernel": 0%....50%....100% - 9 passes',
    _row(_FIXED + _COLS),
    _row([""] * len(_FIXED) + [_UNITS.get(c, "%") for c in _COLS]),
    _launch(0, "state_fwd_kernel", "(128, 1, 1)", "(1, 128, 1)", _A),
    _launch(1, "void ns::wy_inverse_kernel<64>(float *, int)", "(64, 1, 1)", "(512, 16, 1)", _B),
    "==PROF== Disconnected from process 4242",
]) + "\n"


def test_parse_units_separators_and_missing():
    a, b = parse_raw_csv(CSV)
    assert (a["id"], a["kernel"], a["block"], a["grid"]) == (0, "state_fwd_kernel", "(128, 1, 1)", "(1, 128, 1)")
    assert b["kernel"] == "wy_inverse_kernel"
    m = a["metrics"]
    assert m["gpu__time_duration.sum"] == pytest.approx(1234.5)  # µs
    assert m["launch__shared_mem_per_block_static"] == pytest.approx(34816)  # Kbyte/block -> byte
    assert m["l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum"] == pytest.approx(1024e3)
    assert m["dram__bytes_read.sum"] == pytest.approx(1500.25e6)
    assert m["launch__registers_per_thread"] == 255 and m["launch__grid_size"] == 2048
    assert "dram__bytes_write.sum" not in m
    assert b["metrics"]["sm__warps_active.avg.pct_of_peak_sustained_active"] is None


def test_time_units_scale_to_microseconds():
    text = CSV.replace('"usecond"', '"nsecond"')
    assert parse_raw_csv(text)[1]["metrics"]["gpu__time_duration.sum"] == pytest.approx(0.1)
    text = CSV.replace('"usecond"', '"ns"')  # ncu 2025.3 --print-units base, as seen on an H200
    assert parse_raw_csv(text)[1]["metrics"]["gpu__time_duration.sum"] == pytest.approx(0.1)


def test_markdown_table():
    md = summarize(CSV, "NVIDIA-H100-80GB-HBM3", command="ncu --clock-control none ...", ncu_version="Version X")
    assert "NVIDIA-H100-80GB-HBM3" in md and "`ncu --clock-control none ...`" in md and "Version X" in md
    assert len({line.count("|") for line in md.splitlines() if line.startswith("|")}) == 1  # 15 columns each
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    head, first, second, total = rows
    assert first.split(" | ")[:5] == ["| 0", "state_fwd_kernel", "1234.5", "61.2", "70.1"]
    assert "| 1,024,000 | 512 | 1500.2 | — | (1, 128, 1) | (128, 1, 1) | 34,816 |" in first
    assert "| 1 | wy_inverse_kernel | 100.0 |" in second and " — |" in second  # n/a occupancy
    assert "**total** | 1334.5 |" in total and "| 1,024,000 | 512 | 3000.5 | — |" in total


def test_no_rows_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError):
        summarize("==PROF== ERR_NVGPUCTRPERM - no permission\n", "card")
    src = tmp_path / "ncu.csv"
    src.write_text(CSV)
    out = tmp_path / "reports" / "ncu-card.md"
    assert main(["summarize", str(src), "--device", "card", "--out", str(out)]) == 0
    assert out.read_text().startswith("# ncu profile of chunk_osdn forward+backward on card")
    src.write_text("==PROF== ERR_NVGPUCTRPERM - no permission\n")
    assert main(["summarize", str(src), "--device", "card", "--out", str(out)]) == 1
    assert "ERR_NVGPUCTRPERM" in capsys.readouterr().out
