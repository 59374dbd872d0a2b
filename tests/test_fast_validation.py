"""Spec §6 for the fast path: every bad input raises before any kernel launches, with a message naming the
argument; no input tensor is modified (forward and backward); NaN and Inf propagate to the outputs."""

import numpy as np
import pytest
import torch

import osdn_fast.ops.osdn.chunk as chunk_mod
import osdn_fast.ops.osdn.dscan_chunk as dscan_chunk_mod
import osdn_fast.ops.osdn.fused_recurrent as rec_mod
from osdn_fast import chunk_osdn, fused_recurrent_osdn
from osdn_fast.compare import to_torch
from osdn_fast.tolerance import realistic_problem

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ENTRIES = [chunk_osdn, fused_recurrent_osdn]
KERNELS = {chunk_mod: ("dscan_fwd_kernel", "wy_inverse_kernel", "wy_inverse_blocked_kernel", "state_fwd_kernel",
                       "state_out_kernel", "state_bwd_dul_kernel", "state_bwd_kernel", "state_bwd_dh_kernel", "state_bwd_grads_kernel",
                       "state_bwd_grads_stored_kernel", "dscan_bwd_kernel"),
           dscan_chunk_mod: ("dscan_chunk_prep_kernel", "dscan_chunk_fwd_kernel", "dscan_chunk_out_kernel",
                             "dscan_chunk_bwd_pre_kernel", "dscan_chunk_bwd_walk_kernel", "dscan_chunk_bwd_kernel",
                             "dscan_chunk_sum_kernel"),
           rec_mod: ("fused_recurrent_fwd_kernel",)}


def good(B=1, T=5, H=2, K=4, V=3, dtype=torch.float32):
    kw = realistic_problem(B, T, H, K, V, seed=0, full=True)
    return to_torch(kw, dtype, DEVICE, requires_grad=False)


class _NoLaunch:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        raise AssertionError(f"kernel {self.name} launched before validation rejected the input")


@pytest.fixture
def no_launch(monkeypatch):
    log = []
    for mod, names in KERNELS.items():
        for n in names:
            monkeypatch.setattr(mod, n, _NoLaunch(n, log))
    return log


def _bad_cases():
    f16 = torch.float16
    cases = [
        ("q", lambda kw: kw.update(q=kw["q"][0])),  # rank 3
        ("k", lambda kw: kw.update(k=kw["k"][:, :, :, :3])),  # K mismatch
        ("v", lambda kw: kw.update(v=kw["v"][:, :4])),  # T mismatch
        ("v", lambda kw: kw.update(v=kw["v"][0])),  # rank
        ("beta", lambda kw: kw.update(beta=kw["beta"][..., None])),
        ("g", lambda kw: kw.update(g=kw["g"][:, :, :1])),  # H mismatch
        ("alpha", lambda kw: kw.update(alpha=kw["alpha"][:, :3])),
        ("eta", lambda kw: kw.update(eta=torch.ones(3, device=DEVICE))),  # [H] expected
        ("eta", lambda kw: kw.update(eta=-0.5)),
        ("eta", lambda kw: kw.update(eta=torch.tensor([0.3, -0.1], device=DEVICE))),
        ("eta", lambda kw: kw.update(eta=float("nan"))),
        ("eta", lambda kw: kw.update(eta="0.5")),
        ("d_prior", lambda kw: kw.update(d_prior=kw["d_prior"][:, :2])),
        ("initial_state", lambda kw: kw.update(initial_state=kw["initial_state"][..., :2])),
        ("initial_precond", lambda kw: kw.update(initial_precond=kw["initial_precond"][None])),
        ("d_min, d_max", lambda kw: kw.update(d_min=2.0, d_max=1.0)),
        ("d_min", lambda kw: kw.update(d_min=float("nan"))),
        ("d_max", lambda kw: kw.update(d_max=float("nan"))),
        ("scale", lambda kw: kw.update(scale=float("inf"))),
        ("q", lambda kw: kw.update(q=kw["q"].to(torch.int32))),  # integer dtype
        ("k", lambda kw: kw.update(k=kw["k"].double())),  # unsupported streamed dtype
        ("v", lambda kw: kw.update(v=kw["v"].to(torch.int64))),
        ("beta", lambda kw: kw.update(beta=kw["beta"] > 0.5)),  # bool
        ("g", lambda kw: kw.update(g=kw["g"].to(torch.complex64))),
        ("d_prior", lambda kw: kw.update(d_prior=kw["d_prior"].to(torch.int32))),
        ("q", lambda kw: kw.update(q=kw["q"].cpu().numpy())),  # not a tensor
        ("v", lambda kw: kw.update(v=kw["v"].to("meta"))),  # another device
        ("initial_state", lambda kw: kw.update(initial_state=kw["initial_state"].to("meta"))),
        ("chunk_size", lambda kw: kw.update(chunk_size=48)),
        ("cu_seqlens", lambda kw: kw.update(cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.float32, device=DEVICE))),
        ("cu_seqlens", lambda kw: kw.update(cu_seqlens=torch.tensor([1, 2, 5], dtype=torch.int32, device=DEVICE))),
        ("cu_seqlens", lambda kw: kw.update(cu_seqlens=torch.tensor([0, 3, 2, 5], dtype=torch.int32, device=DEVICE))),
        ("cu_seqlens", lambda kw: kw.update(cu_seqlens=torch.tensor([0, 2, 4], dtype=torch.int64, device=DEVICE))),
        ("cu_seqlens", lambda kw: kw.update(cu_seqlens=[0, 2, 5])),
        ("q", lambda kw: kw.update(q=torch.zeros(1, 5, 2, 300, device=DEVICE), k=torch.zeros(1, 5, 2, 300, device=DEVICE),
                                   d_prior=None, initial_state=None, initial_precond=None)),  # K > 256
    ]
    return cases


@pytest.mark.parametrize("fn", ENTRIES, ids=["chunk", "recurrent"])
@pytest.mark.parametrize("arg,mutate", _bad_cases(), ids=[f"{i}-{c[0]}" for i, c in enumerate(_bad_cases())])
def test_bad_input_raises_before_any_kernel_naming_the_argument(fn, arg, mutate, no_launch):
    kw = good()
    if arg == "cu_seqlens":
        kw.pop("initial_state"), kw.pop("initial_precond")
    mutate(kw)
    with pytest.raises((TypeError, ValueError)) as exc:
        fn(**kw)
    assert str(exc.value).startswith(arg + ":"), f"message does not name {arg!r} first: {exc.value}"
    assert no_launch == []


@pytest.mark.parametrize("fn", ENTRIES, ids=["chunk", "recurrent"])
def test_cu_seqlens_needs_batch_of_one(fn, no_launch):
    kw = good(B=2)
    kw.pop("initial_state"), kw.pop("initial_precond")
    with pytest.raises(ValueError, match=r"^cu_seqlens: .*B = 1"):
        fn(**kw, cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.int32, device=DEVICE))
    assert no_launch == []


def test_the_launch_guard_itself_catches_a_launch(no_launch):
    """The guard used above is live: a valid call does reach a kernel and is stopped there."""
    with pytest.raises(AssertionError, match="launched before validation"):
        chunk_osdn(**good())
    first = "dscan_fwd_kernel" if chunk_mod._dscan_mode() == "token" else "dscan_chunk_prep_kernel"
    assert no_launch == [first]


@pytest.mark.parametrize("fn", ENTRIES, ids=["chunk", "recurrent"])
def test_an_eta_tensor_is_read_on_the_host_once_until_changed_in_place(fn, monkeypatch, no_launch):
    """η ≥ 0 (E8) is checked on the host, a device sync for a CUDA η: the same unmodified tensor passed again (a
    decoding loop) is not read again, while an in-place change makes the next call read, and reject, it."""
    import osdn_fast.validation as val
    reads = []
    monkeypatch.setattr(val, "_eta_read", lambda e, f=val._eta_read: reads.append(1) or f(e))
    kw = good()
    eta = torch.tensor([0.3, 0.7], device=DEVICE)
    kw["eta"] = eta
    for _ in range(3):
        with pytest.raises(AssertionError, match="launched before validation"):  # valid: stopped at the launch
            fn(**kw)
    assert len(reads) == 1
    kw["eta"] = eta.clone()  # another tensor, same values: read
    with pytest.raises(AssertionError, match="launched before validation"):
        fn(**kw)
    assert len(reads) == 2
    eta.mul_(-1.0)
    kw["eta"] = eta
    no_launch.clear()
    with pytest.raises(ValueError, match="^eta:"):
        fn(**kw)
    assert len(reads) == 3 and no_launch == []
    eta.fill_(float("nan"))  # NaN is rejected every time, never remembered as checked
    for _ in range(2):
        with pytest.raises(ValueError, match="^eta:"):
            fn(**kw)
    assert len(reads) == 5 and no_launch == []
    # fresh tensors each call (training: softplus(η_raw) every forward) are all read, and their entries go with them
    n0 = len(val._ETA_PASSED)
    for i in range(20):
        kw["eta"] = torch.tensor([0.3, 0.1 * i], device=DEVICE)
        with pytest.raises(AssertionError, match="launched before validation"):
            fn(**kw)
    del kw["eta"]
    assert len(reads) == 25 and len(val._ETA_PASSED) <= n0


@pytest.mark.parametrize("fn", ENTRIES, ids=["chunk", "recurrent"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_input_tensor_is_modified_forward_and_backward(fn, dtype):
    kw = good(B=1, T=20, H=2, K=5, V=3, dtype=dtype)
    kw["use_qk_l2norm_in_kernel"] = True
    for x in kw.values():
        if isinstance(x, torch.Tensor):
            x.requires_grad_(True)
    kw["eta"] = kw["eta"].detach().requires_grad_(True)
    snap = {n: x.detach().clone() for n, x in kw.items() if isinstance(x, torch.Tensor)}
    cu_kw = dict(kw)
    o, h, d = fn(**cu_kw, output_final_state=True, chunk_size=16)
    (o.float().sum() + h.sum() + d.sum()).backward()
    for n, x in kw.items():
        if isinstance(x, torch.Tensor):
            assert torch.equal(x.detach(), snap[n]), f"{n} was modified"
    # packed form too
    kw2 = good(B=1, T=20, H=2, K=5, V=3, dtype=dtype)
    kw2["initial_state"] = kw2["initial_state"].repeat(3, 1, 1, 1)
    kw2["initial_precond"] = kw2["initial_precond"].repeat(3, 1, 1)
    cu = torch.tensor([0, 7, 7, 20], dtype=torch.int32, device=DEVICE)
    snap = {n: x.clone() for n, x in kw2.items() if isinstance(x, torch.Tensor)}
    cu0 = cu.clone()
    fn(**kw2, cu_seqlens=cu, output_final_state=True)
    assert torch.equal(cu, cu0)
    for n, x in kw2.items():
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, snap[n]), f"{n} was modified"


@pytest.mark.parametrize("fn", ENTRIES, ids=["chunk", "recurrent"])
@pytest.mark.parametrize("where,value", [("v", float("nan")), ("k", float("nan")), ("q", float("inf")),
                                         ("beta", float("nan")), ("alpha", float("nan"))])
def test_nan_and_inf_propagate_never_replaced(fn, where, value):
    """A non-finite input at token t of sequence 0, head 0 makes the output of token t non-finite, and leaves
    other sequences and the tokens before t finite (before t's chunk for the chunk path, where the UT transform
    mixes the tokens of one chunk, C3)."""
    kw = good(B=2, T=24, H=2, K=4, V=3)
    t = 19
    x = kw[where].clone()
    x[0, t, 0] = value
    kw[where] = x
    o, h, d = fn(**kw, output_final_state=True, chunk_size=16)
    o = o.detach().cpu()
    before = (t // 16) * 16 if fn is chunk_osdn else t
    assert torch.isfinite(o[:, :before]).all(), "tokens before the bad one must stay finite"
    assert torch.isfinite(o[1]).all(), "another sequence must stay finite"
    assert not torch.isfinite(o[0, t, 0]).all(), f"non-finite {where} did not reach the output of its token"
    if where in ("v", "k", "beta"):  # carried by the state
        assert not torch.isfinite(h[0, 0]).all()
    if where in ("k", "beta", "alpha"):  # carried by the learner
        assert not torch.isfinite(d[0, 0]).all()
