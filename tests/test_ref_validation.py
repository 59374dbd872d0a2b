"""Spec §6: every bad input raises before any computation, naming the argument, what was expected
and what came; nothing is silently repaired. Checked for both NumPy reference entry points."""

import numpy as np
import pytest

from osdn_ref import chunkwise_osdn, recurrent_osdn, recurrent_osdn_vjp

B, T, H, K, V = 2, 5, 3, 4, 6


def good():
    rng = np.random.default_rng(0)
    return dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)),
                v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)),
                g=-rng.uniform(0, 1, (B, T, H)), alpha=rng.uniform(0, 1, (B, T, H)), eta=np.full(H, 0.5),
                d_prior=np.ones((H, K)), initial_state=np.zeros((B, H, K, V)), initial_precond=np.ones((B, H, K)))


def packed():
    kw = {n: (x[:1] if n in ("q", "k", "v", "beta", "g", "alpha", "initial_state", "initial_precond") else x)
          for n, x in good().items()}
    kw.pop("initial_state"), kw.pop("initial_precond")
    return kw


BAD = [
    ("q", dict(q=np.zeros((B, T, K))), r"q: expected rank 4"),
    ("k", dict(k=np.zeros((B, T, H, K + 1))), r"k: expected shape"),
    ("k", dict(k=np.zeros((B, T + 1, H, K))), r"k: expected shape"),
    ("v", dict(v=np.zeros((B, T, H))), r"v: expected rank 4"),
    ("v", dict(v=np.zeros((B, T, H + 1, V))), r"v: expected shape"),
    ("beta", dict(beta=np.zeros((B, T))), r"beta: expected rank 3 with shape \[B, T, H\]"),
    ("g", dict(g=np.zeros((B, T, H + 1))), r"g: expected shape"),
    ("alpha", dict(alpha=np.zeros((B, T + 1, H))), r"alpha: expected shape"),
    ("alpha", dict(alpha=np.full((B, T, H), 1.5)), r"alpha: expected values in \[0, 1\]"),
    ("eta", dict(eta=np.full(H + 1, 0.5)), r"eta: expected a scalar or shape"),
    ("eta", dict(eta=-0.1), r"eta: expected eta >= 0"),
    ("eta", dict(eta=np.array([0.5, -1.0, 0.5])), r"eta: expected eta >= 0"),
    ("d_prior", dict(d_prior=np.ones((H, K + 1))), r"d_prior: expected shape"),
    ("initial_state", dict(initial_state=np.zeros((B, H, V, K))), r"initial_state: expected shape"),
    ("initial_precond", dict(initial_precond=np.ones((B + 1, H, K))), r"initial_precond: expected shape"),
    ("q", dict(q=np.zeros((B, T, H, K), dtype=np.int64)), r"q: expected a floating-point array"),
    ("beta", dict(beta=np.ones((B, T, H), dtype=np.int32)), r"beta: expected a floating-point array"),
    ("v", dict(v=np.zeros((B, T, H, V), dtype=complex)), r"v: expected a real floating-point array"),
    ("d_min", dict(d_min=2.0, d_max=1.0), r"d_min, d_max: expected d_min <= d_max"),
    ("d_max", dict(d_max=float("nan")), r"d_max: expected"),
    ("scale", dict(scale=float("inf")), r"scale: expected a finite number"),
]


@pytest.mark.parametrize("fn", [recurrent_osdn, chunkwise_osdn])
@pytest.mark.parametrize("arg,over,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_the_argument(fn, arg, over, msg):
    kw = {**good(), **over}
    with pytest.raises((ValueError, TypeError), match=msg):
        fn(**kw)


BAD_CU = [
    (np.array([1, 3, T]), r"cu_seqlens: expected to start at 0"),
    (np.array([0, 4, 3, T]), r"cu_seqlens: expected non-decreasing"),
    (np.array([0, 2, T - 1]), r"cu_seqlens: expected to end at T"),
    (np.array([0.0, 2.0, T]), r"cu_seqlens: expected an int32 or int64"),
    (np.array([[0, T]]), r"cu_seqlens: expected shape \[N \+ 1\]"),
]


@pytest.mark.parametrize("fn", [recurrent_osdn, chunkwise_osdn])
@pytest.mark.parametrize("cu,msg", BAD_CU)
def test_bad_cu_seqlens_names_the_argument(fn, cu, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        fn(**packed(), cu_seqlens=cu)


def test_cu_seqlens_needs_batch_one():
    with pytest.raises(ValueError, match=r"cu_seqlens: packed sequences need B = 1"):
        recurrent_osdn(**good(), cu_seqlens=np.array([0, T]))


def test_packed_states_have_one_row_per_sequence():
    with pytest.raises(ValueError, match=r"initial_state: expected shape"):
        recurrent_osdn(**packed(), cu_seqlens=np.array([0, 2, T]), initial_state=np.zeros((1, H, K, V)))


def test_vjp_validates_like_the_forward():
    kw = {**good(), "d_min": 2.0, "d_max": 1.0}
    with pytest.raises(ValueError, match=r"d_min, d_max"):
        recurrent_osdn_vjp(**kw, do=np.zeros((B, T, H, V)))


def test_valid_edge_cases_are_accepted():
    """Not errors: T = 1, α = 0 everywhere (hard resets), empty packed sequences, d_min = d_max, η = 0."""
    kw = good()
    one = {n: (x[:, :1] if n in ("q", "k", "v", "beta", "g", "alpha") else x) for n, x in kw.items()}
    assert recurrent_osdn(**one)[0].shape == (B, 1, H, V)
    assert np.all(np.isfinite(recurrent_osdn(**{**kw, "alpha": np.zeros((B, T, H))})[0]))
    o = recurrent_osdn(**packed(), cu_seqlens=np.array([0, 0, 3, 3, T]), output_final_state=True)
    assert o[1].shape == (4, H, K, V)
    assert np.all(np.isfinite(recurrent_osdn(**{**kw, "eta": 0.0}, d_min=1.0, d_max=1.0)[0]))
