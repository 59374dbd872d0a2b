"""OSDNAttention (osdn_fast.layers): training and decoding paths agree, the layer computes E1–E8 as the
float64 reference does on its own features, gradients reach η and d°, and the recurrence runs in the
kernels of spec §6. Tiny shapes: on a CPU the kernels run in the Triton interpreter (tests/conftest.py)."""

import numpy as np
import pytest
import torch

from osdn_fast import layers as L
from osdn_fast.ops.osdn import chunk as _chunk_mod
from osdn_fast.ops.osdn import fused_recurrent as _fused_mod
from osdn_ref import recurrent_osdn

D, H = 32, 2


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("chunk_size", 16)
    return L.OSDNAttention(hidden_size=D, num_heads=H, **kw)


@pytest.mark.parametrize("apf,conv", [(False, True), (True, True), (True, False)])
def test_decoding_with_cache_equals_training_path(apf, conv):
    """Prefill 3 tokens (chunk_osdn, C1–C3), then decode one token at a time from the cache
    (fused_recurrent_osdn, E1–E8, carrying h, d and the conv windows): the same outputs as one chunkwise
    pass over the sequence (T1 chaining), and the same final state and preconditioner."""
    m = _layer(1, use_apf=apf, use_short_conv=conv)
    with torch.no_grad():  # a non-trivial d° so that the carried d matters
        m.d_prior.add_(0.3 * torch.randn_like(m.d_prior)).clamp_(min=0.2)
    x = torch.randn(2, 7, D)
    with torch.no_grad():
        y_full, c_full = m(x, use_cache=True)
        y0, c = m(x[:, :3], use_cache=True)
        ys = [y0]
        for t in range(3, 7):
            yt, c = m(x[:, t:t + 1], cache=c, use_cache=True)
            ys.append(yt)
    y_dec = torch.cat(ys, 1)
    assert c.seen == 7
    torch.testing.assert_close(y_dec, y_full, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(c.state, c_full.state, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(c.precond, c_full.precond, atol=2e-5, rtol=1e-4)
    assert (c.precond - m.d_prior.detach()).abs().max() > 1e-3  # the learner moved d (E8)


@pytest.mark.parametrize("apf,eta", [(True, 1.3), (False, 0.0)])
def test_layer_is_E1_E8_on_its_features(apf, eta):
    """The layer's output equals the float64 reference recurrence (E1–E8, q/k L2-normalised, scale K^-½)
    run on the layer's own q, k, v, β, α, η, d°, followed by the output norm and projection. η = 0 with
    d° = 1 is DeltaNet (spec §2)."""
    m = _layer(2, use_apf=apf, eta_init=eta, learn_d_prior=eta > 0)
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        if eta > 0:
            m.d_prior.mul_(torch.rand_like(m.d_prior) + 0.5)
        y, _ = m(x)
        q, k, v, beta, alpha, _ = m._features(x, None)
        n = lambda t: None if t is None else t.double().numpy()  # noqa: E731
        o = recurrent_osdn(n(q), n(k), n(v), n(beta), alpha=n(alpha), eta=n(m.eta), d_prior=n(m.d_prior),
                           use_qk_l2norm_in_kernel=True)[0]
        o = torch.from_numpy(o)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.norm_eps) * m.o_norm_weight.double()
        y_ref = o.reshape(2, 9, -1) @ m.o_proj.weight.double().T
    torch.testing.assert_close(y.double(), y_ref, atol=5e-5, rtol=1e-4)
    if eta == 0:
        assert not any(n == "eta_raw" for n, _ in m.named_parameters())
        assert torch.all(m.eta == 0)


def test_gradients_reach_eta_and_d_prior():
    """∂loss/∂η_raw and the directional derivative along ∂loss/∂d° match central differences (float32,
    10% relative): the positive parametrisation η = softplus(η_raw) and d° are trained through the kernel's
    backward (C1–C3 reversed)."""
    m = _layer(3, use_apf=True, eta_init=1.0)
    x = torch.randn(2, 12, D)
    w = torch.randn(2, 12, D)

    def loss():
        return (m(x)[0] * w).sum()

    m.zero_grad()
    loss().backward()
    g_eta = m.eta_raw.grad.clone()
    g_dp = m.d_prior.grad.clone()
    assert torch.isfinite(g_eta).all() and torch.isfinite(g_dp).all()
    assert g_eta.abs().max() > 0 and g_dp.abs().max() > 0
    eps = 3e-2
    with torch.no_grad():
        for h in range(H):
            if abs(g_eta[h]) < 1e-3:
                continue
            m.eta_raw[h] += eps
            lp = loss().item()
            m.eta_raw[h] -= 2 * eps
            lm = loss().item()
            m.eta_raw[h] += eps
            assert (lp - lm) / (2 * eps) == pytest.approx(g_eta[h].item(), rel=0.1, abs=1e-3)
        u = g_dp / g_dp.norm()
        m.d_prior += eps * u
        lp = loss().item()
        m.d_prior -= 2 * eps * u
        lm = loss().item()
        m.d_prior += eps * u
    assert (lp - lm) / (2 * eps) == pytest.approx(g_dp.norm().item(), rel=0.1)


def test_the_recurrence_runs_in_the_kernels(monkeypatch):
    """The layer calls osdn_fast's chunk_osdn (training) and fused_recurrent_osdn (decoding), the Triton
    functions of spec §6 — there is no other path for E1–E8 in the layer."""
    assert L.chunk_osdn is _chunk_mod.chunk_osdn
    assert L.fused_recurrent_osdn is _fused_mod.fused_recurrent_osdn
    calls = []

    def spy(name, fn):
        def wrapped(*a, **kw):
            calls.append(name)
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(L, "chunk_osdn", spy("chunk", _chunk_mod.chunk_osdn))
    monkeypatch.setattr(L, "fused_recurrent_osdn", spy("fused", _fused_mod.fused_recurrent_osdn))
    m = _layer(4)
    x = torch.randn(1, 4, D)
    with torch.no_grad():
        _, c = m(x[:, :3], use_cache=True)
        m(x[:, 3:], cache=c, use_cache=True)
    assert calls == ["chunk", "fused"]


@pytest.mark.parametrize("learn_eta", [True, False])
def test_decoding_reads_eta_on_the_host_once_until_it_changes(monkeypatch, learn_eta):
    """Decoding token by token (no gradient to η) passes the kernels one η tensor while η is unchanged, so the value
    check η ≥ 0 (E8), a device sync on a GPU, reads it once, not once a token; also under torch.inference_mode. After
    a change of η_raw (an optimiser step, in place) the new η is read and used. With gradients on, η is
    softplus(η_raw) afresh, and its gradient flows (checked in test_gradients_reach_eta_and_d_prior)."""
    import osdn_fast.validation as val
    reads = []
    monkeypatch.setattr(val, "_eta_read", lambda e, f=val._eta_read: reads.append(e.detach().clone()) or f(e))
    x = torch.randn(1, 6, D)
    for ctx in (torch.inference_mode, torch.no_grad):  # a fresh layer each, whose η nothing has read yet
        m = _layer(6, learn_eta=learn_eta, eta_init=0.8)
        reads.clear()
        with ctx():
            _, c = m(x[:, :2], use_cache=True)
            for t in range(2, 6):
                _, c = m(x[:, t:t + 1], cache=c, use_cache=True)
        assert len(reads) == 1, ctx
    if learn_eta:
        with torch.no_grad():
            m.eta_raw.add_(0.5)
        reads.clear()
        with torch.no_grad():
            _, c = m(x[:, :2], use_cache=True)
            m(x[:, 2:3], cache=c, use_cache=True)
        assert len(reads) == 1
        torch.testing.assert_close(reads[0], torch.nn.functional.softplus(m.eta_raw.detach()))


def test_bad_configuration():
    with pytest.raises(ValueError, match="num_heads"):
        L.OSDNAttention(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="eta_init"):
        L.OSDNAttention(hidden_size=32, num_heads=2, eta_init=-1.0)
