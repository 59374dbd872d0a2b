"""``osdn tolerance`` (spec §7): the report it writes records its shapes, seeds, device and the commit of the kernels it
measured, its markdown page is a pure function of its JSON (``--render`` rewrites it), and it exits non-zero when an
error exceeds its bound."""

import json

import pytest

from osdn_fast import tolerance


def _run(tmp_path, monkeypatch, commit="abc1234"):
    monkeypatch.setenv("OSDN_COMMIT", commit)
    rc = tolerance.main(["--out", str(tmp_path), "--T", "5", "--seeds", "3", "--dtypes", "float32",
                         "--configs", "plain"])
    name = "cpu-interpreter" if tolerance.BACKEND == "interpreter" else tolerance._device_name("cuda")
    return rc, tmp_path / f"tolerance-{name}.json", tmp_path / f"tolerance-{name}.md"


def test_report_records_what_it_measured_and_passes_its_bounds(tmp_path, monkeypatch):
    rc, js, md = _run(tmp_path, monkeypatch)
    assert rc == 0
    d = json.loads(js.read_text())
    meta = d["meta"]
    assert meta["commit"] == "abc1234" and meta["seeds"] == [3] and meta["dtypes"] == ["float32"]
    assert meta["configs"] == ["plain"] and meta["shapes"]["T"] == 5 and not meta["partial"]
    entries = {(s["entry"], s["quantity"]) for s in d["summary"]}
    for entry in ("chunk_osdn", "fused_recurrent_osdn"):  # both entry points, outputs and every gradient of the config
        for q in ("o", "final_state", "final_precond", "dq", "dk", "dv", "dbeta", "deta"):
            assert (entry, q) in entries
    assert all(s["within"] and s["scaled"] <= s["bound"] for s in d["summary"])
    assert "kernels of commit abc1234" in md.read_text()
    # which state walks ran (C3): the interpreter's shapes have few (sequence, head) pairs
    assert meta["walks"] == "forward two-product, adjoint tiled"
    assert "state walks: forward two-product, adjoint tiled" in md.read_text()


def test_walks_named_follow_the_pairs_and_dtypes():
    """The header names the state walks each dtype ran: the full walks from 64 (sequence, head) pairs on; below that the
    two-product forward walk, except for float32 at K = 128, whose gradient kernel splits the key columns."""
    assert tolerance._walks_desc(dict(B=8, T=4096, H=16, K=128, V=128)) == "forward full, adjoint full"
    assert tolerance._walks_desc(dict(B=2, T=2048, H=4, K=128, V=128)) == (
        "forward full, adjoint tiled for float32; forward two-product, adjoint tiled for float16; "
        "forward two-product, adjoint tiled for bfloat16")
    # one long sequence over 4 heads: the walks' 8 (16-bit dots) or 16 (float32 dots) programs leave most of the card
    # idle, so they run two-level (float32's forward walk is the full one, which has no two-level form)
    seg = "two-level tiled (segments of 64 chunks)"
    two = f"two-level two-product (segments of 64 chunks), adjoint {seg}"
    assert tolerance._walks_desc(dict(B=1, T=32768, H=4, K=128, V=128)) == (
        f"forward full, adjoint {seg} for float32; forward {two} for float16; forward {two} for bfloat16")


def test_markdown_page_is_rendered_from_the_json_alone(tmp_path, monkeypatch):
    _, js, md = _run(tmp_path, monkeypatch)
    written = md.read_text()
    md.unlink()
    assert tolerance.main(["--render", str(js)]) == 0
    assert md.read_text() == written
    d = json.loads(js.read_text())
    d["summary"][0]["within"] = False  # a row over its bound is marked, not hidden
    assert "| NO |" in tolerance.render_markdown(d["meta"], d["summary"])


def test_a_row_over_its_bound_fails_the_run(tmp_path, monkeypatch):
    tight = {b: {dt: {"fwd": 0.0, "grad": 0.0} for dt in v} for b, v in tolerance.TOLERANCES.items()}
    monkeypatch.setattr(tolerance, "TOLERANCES", tight)
    rc, js, _ = _run(tmp_path, monkeypatch)
    assert rc == 1
    assert not all(s["within"] for s in json.loads(js.read_text())["summary"])


def test_source_commit_prefers_the_environment(monkeypatch):
    monkeypatch.setenv("OSDN_COMMIT", "deadbee")
    assert tolerance.source_commit() == "deadbee"
    monkeypatch.delenv("OSDN_COMMIT")
    sha = tolerance.source_commit()  # this checkout's HEAD (+dirty), or "unknown" outside git
    assert sha == "unknown" or len(sha.split("+")[0]) >= 7


@pytest.mark.parametrize("bad", [["--dtypes", "float64"], ["--configs", "gated"]])
def test_unknown_dtypes_and_configs_are_refused(bad):
    with pytest.raises(SystemExit):
        tolerance.main(bad)
