"""`osdn verify` (the main job): runs end to end, prints the table, writes reports, exits 0; and a
reference with a planted error makes it fail."""

import json
import subprocess
import sys

import numpy as np
import pytest

from osdn_ref import cli, verify


def test_osdn_verify_quick_writes_the_table(tmp_path, capsys):
    rc = cli.main(["verify", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("T1", "T2", "T3", "T4", "T5", "D2/T1", "VJP"):
        assert f"\n{label} " in out
    data = json.loads((tmp_path / "verify.json").read_text())
    assert all(r["passed"] in (True, None) for r in data["rows"])
    assert {r["statement"] for r in data["rows"]} >= {"T1", "T2", "T3", "T4", "T5"}
    assert "| statement | quantity |" in (tmp_path / "verify.md").read_text()


def test_python_dash_m_entry_point_lists_the_subcommands():
    res = subprocess.run([sys.executable, "-m", "osdn_ref", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "verify" in res.stdout


def test_verify_fails_on_a_planted_error(monkeypatch):
    """Play d_t instead of d̄_{t-1} (the update applied before the write): T1/T3-style rows must fail."""
    import osdn_ref.recurrent as rec

    real = rec.osdn_step

    def wrong_step(h, d, q, k, v, beta, g, alpha, eta, d_prior, scale, d_min, d_max):
        _, d_new, _, _ = real(h, d, q, k, v, beta, g, alpha, eta, d_prior, scale, d_min, d_max)
        # write with the *updated* preconditioner (α = 1 so that d̄ of the next call is d_new)
        return real(h, d_new, q, k, v, beta, g, np.ones_like(alpha), np.zeros_like(eta), d_prior, scale, d_min, d_max)

    monkeypatch.setattr(rec, "osdn_step", wrong_step)
    monkeypatch.setattr(verify, "osdn_step", wrong_step)
    rows = []
    verify._check_t1(rows, [(1, 30, 2, 5, 4)])
    assert any(r.passed is False for r in rows)
