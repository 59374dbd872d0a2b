"""T1: the chunkwise form C1–C3 equals the recurrence E1–E8 for every chunk size; states chain;
packed sequences equal separate runs."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import SEQ_ARGS, problems

from osdn_ref import chunkwise_osdn, recurrent_osdn

RTOL = 1e-12  # float64 identity; measured ≤ 3e-15 (reports/verify.json)


def rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1.0)


def assert_same(res, ref):
    for x, y in zip(res, ref):
        if y is None:
            assert x is None
        else:
            assert rel(x, y) <= RTOL


@given(problems(max_T=80, packed=False))
def test_T1_chunkwise_equals_recurrent_for_every_chunk_size(kw):
    ref = recurrent_osdn(**kw, output_final_state=True)
    for C in range(1, 71):
        assert_same(chunkwise_osdn(**kw, output_final_state=True, chunk_size=C), ref)


@given(problems(packed=True), st.integers(1, 9))
def test_T1_chunkwise_equals_recurrent_on_packed_sequences(kw, C):
    assert_same(chunkwise_osdn(**kw, output_final_state=True, chunk_size=C),
                recurrent_osdn(**kw, output_final_state=True))


@given(problems(packed=False), st.data())
def test_T1_final_states_chain_across_a_split(kw, data):
    T = kw["q"].shape[1]
    assume(T >= 2)
    t1 = data.draw(st.integers(1, T - 1))
    split = lambda sl: {n: (x[:, sl] if n in SEQ_ARGS else x) for n, x in kw.items()}
    o_all, h_all, d_all = recurrent_osdn(**kw, output_final_state=True)
    o1, h1, d1 = chunkwise_osdn(**split(slice(0, t1)), output_final_state=True, chunk_size=5)
    second = split(slice(t1, T))
    second.update(initial_state=h1, initial_precond=d1)
    o2, h2, d2 = recurrent_osdn(**second, output_final_state=True)
    assert rel(np.concatenate([o1, o2], axis=1), o_all) <= RTOL
    assert rel(h2, h_all) <= RTOL and rel(d2, d_all) <= RTOL


@given(problems(packed=True))
def test_T1_packed_sequences_equal_separate_runs(kw):
    cs = kw["cu_seqlens"]
    o, h, d = recurrent_osdn(**kw, output_final_state=True)
    for n in range(len(cs) - 1):
        one = {m: (x[:, cs[n]:cs[n + 1]] if m in SEQ_ARGS else x) for m, x in kw.items() if m != "cu_seqlens"}
        for m in ("initial_state", "initial_precond"):
            if m in kw:
                one[m] = kw[m][n:n + 1]
        if cs[n + 1] == cs[n]:  # an empty sequence hands its initial state through unchanged
            h0 = kw.get("initial_state")
            assert np.array_equal(h[n], h0[n] if h0 is not None else np.zeros_like(h[n]))
            continue
        o1, h1, d1 = recurrent_osdn(**one, output_final_state=True)
        assert rel(o[:, cs[n]:cs[n + 1]], o1) <= RTOL
        assert rel(h[n:n + 1], h1) <= RTOL and rel(d[n:n + 1], d1) <= RTOL


def test_chunk_size_must_be_a_positive_integer():
    kw = dict(q=np.ones((1, 3, 1, 2)), k=np.ones((1, 3, 1, 2)), v=np.ones((1, 3, 1, 2)), beta=np.ones((1, 3, 1)))
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="chunk_size"):
            chunkwise_osdn(**kw, chunk_size=bad)


def test_alpha_zero_after_long_decay_does_not_produce_nan():
    """Γ_i/Γ_j in log space: a hard reset after gates that underflow Γ stays exact (spec §6)."""
    rng = np.random.default_rng(0)
    T, K = 600, 4
    kw = dict(q=rng.standard_normal((1, T, 1, K)), k=rng.standard_normal((1, T, 1, K)) / 2,
              v=rng.standard_normal((1, T, 1, 3)), beta=rng.uniform(0, 1, (1, T, 1)),
              alpha=np.full((1, T, 1), 1e-3), eta=0.5)
    kw["alpha"][0, 300, 0] = 0.0
    ref = recurrent_osdn(**kw, output_final_state=True)
    res = chunkwise_osdn(**kw, output_final_state=True, chunk_size=T)
    assert all(np.isfinite(x).all() for x in res)
    assert_same(res, ref)
