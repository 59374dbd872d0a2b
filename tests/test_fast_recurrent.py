"""The decoding kernel ``fused_recurrent_osdn`` (E1–E8 token by token) equals the float64 reference in every
output and gradient; decoding one token at a time from a carried (state, preconditioner) equals the chunk
path over the whole sequence (T1: states chain); and the float64 torch recurrence used as the GPU oracle
equals :mod:`osdn_ref` (forward and VJP), so that it may stand in for it at realistic shapes.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEQ_ARGS, problems

from osdn_fast import chunk_osdn, fused_recurrent_osdn
from osdn_fast.compare import (compare, error_metrics, reference_outputs, rounded_reference_kwargs, to_torch,
                               torch_reference_outputs)
from osdn_fast.tolerance import BACKEND, TOLERANCES, assert_within, realistic_problem

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (realistic shapes)")


def check(kw, dtype, grads=True):
    errs, fast, ref = compare(fused_recurrent_osdn, kw, dtype, DEVICE, grads=grads, chunk_size=16)
    assert_within(errs, dtype, BACKEND, what="fused_recurrent_osdn", l2norm=bool(kw.get("use_qk_l2norm_in_kernel")))
    return fast, ref


@given(problems())
def test_T1_recurrent_equals_reference_float32_outputs_and_all_gradients(kw):
    check(kw, torch.float32)


@given(problems())
def test_T1_recurrent_equals_reference_float16_outputs_and_all_gradients(kw):
    check(kw, torch.float16)


@given(problems(max_T=24), st.sampled_from([torch.float32, torch.float16]))
def test_T1_decoding_token_by_token_from_a_carried_cache_equals_chunk_path(kw, dtype):
    """Feed one token at a time, carrying (h, d) between calls: the outputs and the final (h, d) equal one
    ``chunk_osdn`` call over the whole sequence (and the float64 reference)."""
    tkw = to_torch(kw, dtype, DEVICE, requires_grad=False, eta_as_tensor=False)
    cu = tkw.pop("cu_seqlens", None)
    B, T = kw["q"].shape[:2]
    o_full, h_full, d_full = chunk_osdn(**tkw, cu_seqlens=cu, output_final_state=True, chunk_size=16)
    if cu is None:
        seqs = [(slice(None), 0, T)]
    else:  # decode each packed sequence on its own, from its own initial state
        c = cu.tolist()
        seqs = [(n, c[n], c[n + 1]) for n in range(len(c) - 1)]
    outs, hs, ds = [], [], []
    for sel, t0, t1 in seqs:
        pick = (lambda x: x) if cu is None else (lambda x: x[sel:sel + 1])
        h = None if tkw.get("initial_state") is None else pick(tkw["initial_state"])
        d = None if tkw.get("initial_precond") is None else pick(tkw["initial_precond"])
        for t in range(t0, t1):
            step = {n: (x[:, t:t + 1] if n in SEQ_ARGS else x) for n, x in tkw.items()
                    if n not in ("initial_state", "initial_precond")}
            o, h, d = fused_recurrent_osdn(**step, initial_state=h, initial_precond=d, output_final_state=True)
            outs.append(o)
        if t1 == t0:  # an empty packed sequence keeps its initial (h, d)
            N, H, K, V = 1, kw["q"].shape[2], kw["q"].shape[3], kw["v"].shape[3]
            h = torch.zeros(N, H, K, V, device=DEVICE) if h is None else h.float()
            d = (torch.tensor(kw.get("d_prior", np.ones((H, K))), dtype=torch.float32, device=DEVICE)[None]
                 if d is None else d.float())
        hs.append(h)
        ds.append(d)
    o_dec = torch.cat(outs, dim=1)
    h_dec, d_dec = torch.cat(hs), torch.cat(ds)
    tol = TOLERANCES[BACKEND][str(dtype).replace("torch.", "")]["fwd"]
    for name, a, b in (("o", o_dec, o_full), ("final_state", h_dec, h_full), ("final_precond", d_dec, d_full)):
        e = error_metrics(a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy())
        assert e["max_abs"] <= 2 * tol * max(e["ref_max"], 0.1), f"{name}: decoding vs chunk path {e}"


def test_decoding_with_an_explicit_cache_matches_reference_chaining():
    """A prefix by the chunk path, then decoding steps from its returned (h, d): equals the reference run."""
    kw = realistic_problem(B=2, T=30, H=2, K=9, V=7, seed=2, full=True)
    tkw = to_torch(kw, torch.float32, DEVICE, requires_grad=False)
    split = lambda sl: {n: (x[:, sl] if n in SEQ_ARGS else x) for n, x in tkw.items()}
    first = split(slice(0, 20))
    o1, h, d = chunk_osdn(**first, output_final_state=True, chunk_size=16)
    rest = split(slice(20, 30))
    rest.update(initial_state=h, initial_precond=d)
    o2, h2, d2 = fused_recurrent_osdn(**rest, output_final_state=True)
    ref = reference_outputs(rounded_reference_kwargs(tkw), None, None, None, False, grads=False)
    o = torch.cat([o1, o2], 1).cpu().double().numpy()
    for name, a in (("o", o), ("final_state", h2.cpu().double().numpy()), ("final_precond", d2.cpu().double().numpy())):
        e = error_metrics(a, ref[name])
        assert e["max_abs"] <= TOLERANCES[BACKEND]["float32"]["fwd"] * max(e["ref_max"], 0.1), (name, e)


@given(problems(max_T=20))
def test_torch_float64_oracle_equals_osdn_ref_forward_and_vjp(kw):
    """The torch float64 recurrence (the GPU oracle of ``osdn tolerance``) equals osdn_ref E1–E8 and its VJP."""
    tkw = to_torch(kw, torch.float64, "cpu")
    kw64 = rounded_reference_kwargs(tkw)
    B, T, H, K = kw["q"].shape
    V = kw["v"].shape[-1]
    N = B if kw.get("cu_seqlens") is None else len(kw["cu_seqlens"]) - 1
    rng = np.random.default_rng(0)
    do, dht, ddt = rng.standard_normal((B, T, H, V)), rng.standard_normal((N, H, K, V)), rng.standard_normal((N, H, K))
    ref = reference_outputs(kw64, do, dht, ddt, eta_is_tensor=True)
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    got = torch_reference_outputs(tkw, t(do), t(dht), t(ddt))
    assert set(got) == set(ref)
    for name in ref:
        e = error_metrics(got[name], ref[name])
        assert e["max_abs"] <= 1e-10 * max(e["ref_max"], 1.0), (name, e)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_recurrent_realistic_shape_against_float64(dtype):
    kw = realistic_problem(B=2, T=300, H=4, K=128, V=128, seed=9, full=True)
    errs, _, _ = compare(fused_recurrent_osdn, kw, dtype, "cuda", oracle="torch")
    assert_within(errs, dtype, "cuda", what="fused_recurrent_osdn realistic")


@pytest.mark.parametrize("fn_name", ["chunk_osdn", "fused_recurrent_osdn"])
def test_no_grad_path_equals_autograd_path_for_each_eta(fn_name):
    """Without anything to differentiate the entry points skip autograd and reuse cached device constants
    (η filled from a float, d° = 1, cu_seqlens offsets): outputs equal the autograd path bit for bit, and a
    second η or a second packing gets its own constants (a stale cache entry would fail here)."""
    import osdn_fast

    fn = getattr(osdn_fast, fn_name)
    gen = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=gen).to(DEVICE)
    q, k, v = r(1, 23, 2, 8), torch.nn.functional.normalize(r(1, 23, 2, 8), dim=-1), r(1, 23, 2, 8)
    beta = torch.rand(1, 23, 2, generator=gen).to(DEVICE)
    outs = {}
    for eta in (0.3, 1.7):
        for cu in (None, torch.tensor([0, 9, 23], device=DEVICE)):
            with torch.no_grad():
                o_ng, h_ng, d_ng = fn(q, k, v, beta, eta=eta, cu_seqlens=cu, output_final_state=True)
            leaves = [x.clone().requires_grad_() for x in (q, k, v, beta)]
            o, h, d = fn(*leaves, eta=eta, cu_seqlens=cu, output_final_state=True)
            assert o.grad_fn is not None and o_ng.grad_fn is None
            for a, b in ((o_ng, o), (h_ng, h), (d_ng, d)):
                assert torch.equal(a, b.detach())
            outs[eta, cu is None] = o_ng
    assert not torch.equal(outs[0.3, True], outs[1.7, True])
    assert not torch.equal(outs[0.3, True], outs[0.3, False])


def test_no_grad_batched_inputs_equal_the_packed_autograd_path():
    """Without gradients ``fused_recurrent_osdn`` hands its kernel the [B, T, H, ·] inputs as they are (made
    contiguous, not viewed as [1, B·T, H, ·]); with B > 1, non-contiguous inputs, a carried (state,
    preconditioner) and T = 1 (a decoding step) the outputs equal the packed autograd path bit for bit, and no
    input is modified."""
    gen = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(*s, generator=gen).to(DEVICE)
    B, H, K, V = 3, 2, 8, 4
    for T in (1, 5):
        q = r(B, H, T, K).transpose(1, 2)  # non-contiguous [B, T, H, K]
        k = torch.nn.functional.normalize(r(B, T, H, K), dim=-1)
        v = r(B, T, H, V)
        beta = torch.rand(B, T, H, generator=gen).to(DEVICE)
        alpha = torch.rand(B, H, T, generator=gen).to(DEVICE).transpose(1, 2)
        h0, d0 = r(B, H, K, V), 1 + 0.1 * r(B, H, K)
        kw = dict(alpha=alpha, eta=0.4, initial_state=h0, initial_precond=d0, output_final_state=True)
        snap = [x.clone() for x in (q, k, v, beta, alpha, h0, d0)]
        with torch.no_grad():
            got = fused_recurrent_osdn(q, k, v, beta, **kw)
        want = fused_recurrent_osdn(q, k.clone().requires_grad_(), v, beta, **kw)
        assert want[0].grad_fn is not None and got[0].grad_fn is None
        assert got[0].shape == (B, T, H, V)
        for a, b in zip(got, want):
            assert torch.equal(a, b.detach())
        for x, s in zip((q, k, v, beta, alpha, h0, d0), snap):
            assert torch.equal(x, s)

