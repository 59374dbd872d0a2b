"""MQAR generator and training script (osdn_fast.mqar, issue 5 model part). The generator's properties are
checked exhaustively on random draws; training is checked to run one step through the kernels (Triton
interpreter on a CPU, tiny shapes) and to move every trained parameter, η (E8) and d° (E1) included."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from osdn_fast import mqar as M


@given(n=st.integers(1, 6), N=st.integers(1, 12), extra=st.integers(0, 20), R=st.integers(1, 3),
       vocab=st.sampled_from([32, 64, 256]), seed=st.integers(0, 2**31))
def test_generator(n, N, extra, R, vocab, seed):
    """Context k₁v₁…k_Nv_N (distinct keys < vocab/2 ≤ values), repeated R times (JRT); every key queried
    once in the query region, followed by its value; the label at the query key is that value; all else is
    padding 0 / ignored; same seed, same data."""
    half = vocab // 2
    N = min(N, half - 1)
    T = 4 * N + extra
    x, y = M.make_mqar(n, T, N, vocab, R, seed)
    assert x.shape == y.shape == (n, T + 2 * N * (R - 1))
    x2, y2 = M.make_mqar(n, T, N, vocab, R, seed)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    for i in range(n):
        ctx = x[i, :2 * N]
        keys, vals = ctx[0::2], ctx[1::2]
        assert len(set(keys.tolist())) == N
        assert np.all((keys >= 1) & (keys < half)) and np.all((vals >= half) & (vals < vocab))
        for r in range(R):
            np.testing.assert_array_equal(x[i, 2 * N * r:2 * N * (r + 1)], ctx)
        assert np.all(y[i, :2 * N * R] == M.IGNORE)
        pos = np.where(y[i] != M.IGNORE)[0]
        assert len(pos) == N
        table = dict(zip(keys.tolist(), vals.tolist()))
        assert sorted(x[i, pos].tolist()) == sorted(keys.tolist())  # every key queried once
        for p in pos:
            assert y[i, p] == table[int(x[i, p])]
            assert x[i, p + 1] == y[i, p]  # teacher forcing: the value follows its query key
        q = x[i, 2 * N * R:]
        assert np.count_nonzero(q) == 2 * N


def test_generator_rejects_bad_sizes():
    with pytest.raises(ValueError, match="seq_len"):
        M.make_mqar(2, 15, 4, 64)
    with pytest.raises(ValueError, match="num_kv_pairs"):
        M.make_mqar(2, 400, 32, 64)
    with pytest.raises(ValueError, match="jrt_repeats"):
        M.make_mqar(2, 16, 2, 64, jrt_repeats=0)


def _tiny(arm):
    torch.manual_seed(0)
    return M.MQARModel(32, d_model=32, num_layers=2, num_heads=2, mlp_ratio=1.0, chunk_size=16, **M.ARMS[arm])


def test_one_training_step_moves_every_parameter():
    """At initialisation the loss is ≈ ln(vocab) (near-uniform logits); one AdamW step through chunk_osdn's
    backward changes every parameter, η_raw (E8) and d° (E1) included, and the learnt η stays positive."""
    model = _tiny("osdn")
    x, y = M.make_mqar(2, 16, 2, 32, 1, seed=0)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=M.IGNORE)
    assert loss.item() == pytest.approx(math.log(32), abs=0.1)
    loss.backward()
    opt.step()
    names = [n for n, _ in model.named_parameters()]
    assert sum("eta_raw" in n for n in names) == 2 and sum("d_prior" in n for n in names) == 2
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), n
        assert (p.detach() - before[n]).abs().max() > 0, f"{n} did not move"
    assert all(e > 0 for lay in model.etas() for e in lay)


def test_eta0_arm_is_the_same_layer_without_the_learner():
    """The ablation arm has the same parameters except η_raw, and η = 0 in every head (E8 off)."""
    a, b = _tiny("osdn"), _tiny("eta0")
    na = {n for n, _ in a.named_parameters()}
    nb = {n for n, _ in b.named_parameters()}
    assert na - nb == {f"blocks.{i}.mixer.eta_raw" for i in range(2)} and not (nb - na)
    assert b.etas() == [[0.0, 0.0], [0.0, 0.0]]


def test_cli_tiny_writes_reports(tmp_path):
    """``osdn mqar --tiny`` trains both arms for one step and writes mqar.{md,json,png} with every run."""
    assert M.main(["--tiny", "--steps", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "mqar.json").read_text())
    assert [(r["arm"], r["steps"]) for r in data["runs"]] == [("osdn", 1), ("eta0", 1)]
    assert all(0.0 <= v <= 1.0 for r in data["runs"] for v in r["acc"].values())
    md = (tmp_path / "mqar.md").read_text()
    assert "osdn mqar --tiny --steps 1" in md
    assert (tmp_path / "mqar.png").stat().st_size > 0
