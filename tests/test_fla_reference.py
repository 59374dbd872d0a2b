"""Spec §2's special case against the peer library's own definitions: with η = 0, d° = 1 and α = 1, OSDN is DeltaNet
(g = 0) and Gated DeltaNet (g ≠ 0) as flash-linear-attention 0.6.0 writes them in its pure-torch reference recurrences
(``fla/ops/delta_rule/naive.py: delta_rule_recurrence``, ``fla/ops/gated_delta_rule/naive.py:
naive_recurrent_gated_delta_rule``), with final states in fla's layout h = Sᵀ [B, H, K, V] (spec §1), so that states
pass between the two libraries.

These run on any machine: fla's recurrences are float32 torch loops, loaded from the installed fla-core (the test
extra) without importing fla's Triton kernels. They check the float64 reference's outputs, final states and every
gradient fla's loop has (by autograd through it) and the fast path's states passed to and from fla. Bounds: the float32
bounds of :data:`osdn_fast.tolerance.TOLERANCES`, which fla's float32 loop is held to as our float32 kernels are. The
GPU cross-check against fla's Triton kernels is in tests/test_fast_chunk.py.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from osdn_fast import chunk_osdn, fused_recurrent_osdn
from osdn_fast.tolerance import TOLERANCES, scaled_error
from osdn_ref import recurrent_osdn, recurrent_osdn_vjp
from strategies import problems

FLOOR = 0.1  # the tests' scaled-error floor (osdn_fast.tolerance.scaled_error)
BOUND = TOLERANCES["cuda"]["float32"]  # equal to the interpreter's float32 bounds
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _load_naive(rel: str):
    """One of fla's naive.py modules (torch and einops only), by path: fla's package __init__ is not run."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (it comes with the test extra: pip install -e '.[test]')")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    mod_spec = importlib.util.spec_from_file_location("fla_naive_" + rel.replace("/", "_")[:-3], path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fla():
    """fla's two reference recurrences: gated (token-major [B, T, H, ·]) and plain (head-major [B, H, T, ·])."""
    gated = _load_naive("ops/gated_delta_rule/naive.py").naive_recurrent_gated_delta_rule
    plain = _load_naive("ops/delta_rule/naive.py").delta_rule_recurrence

    def run(q, k, v, beta, g=None, h0=None):
        """fla's DeltaNet (g None: its plain recurrence) or Gated DeltaNet; float32 tensors in, (o, h_T) out."""
        if g is None:
            t = lambda x: x.transpose(1, 2)  # noqa: E731  [B, T, H, ·] -> [B, H, T, ·]
            o, h = plain(t(q), t(k), t(v), t(beta), initial_state=h0, output_final_state=True)
            return t(o), h
        return gated(q, k, v, beta, g, initial_state=h0, output_final_state=True)

    return run


def _deltanet_kw(kw, gated):
    """A drawn problem restricted to DeltaNet's inputs: η = 0, d° = 1, α = 1, no L2 norm (fla's loops have none)."""
    B, T, H, K = kw["q"].shape
    out = {n: kw[n] for n in ("q", "k", "v", "beta")}
    out["g"] = kw.get("g", np.zeros((B, T, H))) if gated else None
    out["initial_state"] = kw.get("initial_state")
    return out


def _t32(x):
    return None if x is None else torch.tensor(np.asarray(x), dtype=torch.float32)


def _err(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return scaled_error(dict(max_abs=float(np.max(np.abs(x - ref))), ref_max=float(np.max(np.abs(ref)))), FLOOR)


@given(problems(max_T=40, packed=False), st.booleans())
def test_eta_zero_reference_is_fla_deltanet_outputs_and_final_state(fla, kw, gated):
    """η = 0, d° = 1, α = 1 (spec §2): the float64 reference's o and h_T are fla's (Gated) DeltaNet's, h_T in fla's
    [B, H, K, V] layout. Measured worst over 300 examples: 3.8e-7 scaled (bound 2e-5)."""
    d = _deltanet_kw(kw, gated)
    B, T, H, K = d["q"].shape
    o, h, _ = recurrent_osdn(**d, eta=0.0, d_prior=np.ones((H, K)), output_final_state=True)
    o_f, h_f = fla(*(_t32(d[n]) for n in ("q", "k", "v", "beta", "g", "initial_state")))
    assert _err(o_f.numpy(), o) <= BOUND["fwd"]
    assert _err(h_f.numpy(), h) <= BOUND["fwd"]


@given(problems(max_T=30, packed=False), st.booleans())
def test_eta_zero_reference_gradients_are_autograd_through_fla(fla, kw, gated):
    """The float64 reference's exact VJP at η = 0, d° = 1, α = 1 equals torch autograd through fla's float32 loop for
    every input fla has: q, k, v, β, g (gated) and the initial state, with cotangents on o and h_T. Measured worst
    over 300 examples: 4.6e-6 scaled (bound 1e-4)."""
    d = _deltanet_kw(kw, gated)
    B, T, H, K = d["q"].shape
    V = d["v"].shape[-1]
    if d["initial_state"] is None:
        d["initial_state"] = np.zeros((B, H, K, V))
    rng = np.random.default_rng(T * 131 + K * 7 + V)
    do, dht = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    ref = recurrent_osdn_vjp(**d, eta=0.0, d_prior=np.ones((H, K)), do=do, dht=dht)
    leaves = {n: _t32(x).requires_grad_() for n, x in d.items() if x is not None}
    o_f, h_f = fla(*(leaves.get(n) for n in ("q", "k", "v", "beta", "g", "initial_state")))
    torch.autograd.backward([o_f, h_f], [_t32(do), _t32(dht)])
    for n, x in leaves.items():
        assert _err(x.grad.numpy(), ref[n]) <= BOUND["grad"], n


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("entry", [chunk_osdn, fused_recurrent_osdn], ids=["chunk", "recurrent"])
def test_final_states_pass_between_fla_and_the_fast_path(fla, entry, gated):
    """States are exchangeable (spec §1): fla's h_T after tokens [0, m) as our initial_state for [m, T), and our h_T
    after [0, m) as fla's initial state for [m, T), both give fla's outputs and h_T over [0, T) (η = 0, d° = 1;
    T = 37 and m = 19 cross the chunk boundaries; K = 7, V = 5; float32, the interpreter on a CPU)."""
    B, T, H, K, V, m = 2, 37, 2, 7, 5, 19
    rng = np.random.default_rng(3 + gated)
    k = rng.standard_normal((B, T, H, K))
    d = dict(q=rng.standard_normal((B, T, H, K)), k=k / np.linalg.norm(k, axis=-1, keepdims=True),
             v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)),
             g=-rng.uniform(0, 0.3, (B, T, H)) if gated else None)
    x = {n: _t32(a) for n, a in d.items()}
    part = lambda s: [None if a is None else a[:, s] for a in (x["q"], x["k"], x["v"], x["beta"], x["g"])]  # noqa: E731
    o_all, h_all = fla(*part(slice(0, T)))

    def ours(s, h0):
        q, k, v, beta, g = (None if a is None else a.to(DEVICE) for a in part(s))
        o, h, _ = entry(q, k, v, beta, g=g, eta=0.0, initial_state=None if h0 is None else h0.to(DEVICE),
                        output_final_state=True)
        return o.cpu(), h.cpu()

    _, h_fla_head = fla(*part(slice(0, m)))
    o_tail, h_end = ours(slice(m, T), h_fla_head)  # fla → ours
    assert _err(o_tail.numpy(), o_all[:, m:].numpy()) <= BOUND["fwd"]
    assert _err(h_end.numpy(), h_all.numpy()) <= BOUND["fwd"]
    _, h_our_head = ours(slice(0, m), None)
    o_tail, h_end = fla(*part(slice(m, T)), h0=h_our_head)  # ours → fla
    assert _err(o_tail.numpy(), o_all[:, m:].numpy()) <= BOUND["fwd"]
    assert _err(h_end.numpy(), h_all.numpy()) <= BOUND["fwd"]
