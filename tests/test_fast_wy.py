"""C3's UT transform alone: the M = (I + A)^{-1} of ``chunk._wy_inverse`` (the 16×16 blocked kernel for
chunks of 16–64 rows, the row-by-row one for 128) equals the float64 inverse of I + A, with
A_ij = β_i e^{λ_i − λ_j} ⟨k_i, k̃_j⟩ (j < i, λ the within-chunk cumulative g) built in float64 from the same
inputs, chunk by chunk of each packed sequence (short last chunks zero-padded, M identity-padded)."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import osdn_fast
import osdn_fast.ops.osdn.chunk as chunk_mod
from osdn_fast.ops.osdn.utils import chunk_indices

BOUND = 1e-5  # max |M − M_ref| / max |M_ref|, float32


def wy_fast(k, w, beta, g, cu_host, BT):
    """M [T, H, BT] from the kernels, launched as ``_chunk_fwd`` launches them (float32, "ieee" dots)."""
    K = k.shape[-1]
    idx_h, _ = chunk_indices(cu_host, BT)
    cu = torch.as_tensor(cu_host, dtype=torch.int32)
    M = chunk_mod._wy_inverse(k[None], w[None], beta[None], None if g is None else g[None], cu,
                              torch.as_tensor(idx_h), k.shape[1], K, BT, max(16, triton.next_power_of_2(K)),
                              tl.float32, "ieee")
    return M[0]


def wy_ref(k, w, beta, g, cu_host, BT):
    """The same M in float64 torch: A per chunk, zero-padded to BT, inverted by torch.linalg.inv."""
    T, H, _ = k.shape
    k, w, beta = k.double(), w.double(), beta.double()
    g = torch.zeros(T, H, dtype=torch.float64) if g is None else g.double()
    M = torch.zeros(T, H, BT, dtype=torch.float64)
    for bos, eos in zip(cu_host[:-1], cu_host[1:]):
        for t0 in range(bos, eos, BT):
            n = min(BT, eos - t0)
            s = slice(t0, t0 + n)
            for h in range(H):
                lam = torch.cumsum(g[s, h], 0)
                A = torch.zeros(BT, BT, dtype=torch.float64)
                A[:n, :n] = torch.tril(beta[s, h, None] * torch.exp(lam[:, None] - lam[None, :])
                                       * (k[s, h] @ w[s, h].T), diagonal=-1)
                M[s, h] = torch.linalg.inv(torch.eye(BT, dtype=torch.float64) + A)[:n]
    return M


def scaled_err(M, R):
    return ((M.double() - R).abs().max() / R.abs().max()).item()


def inputs(T, H, K, seed, use_g=True, g_scale=1.0):
    """Unit read keys, write keys k̃ = d ⊙ k with d ∈ [0.5, 1.5] (as the d-scan makes them), β ∈ (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(T, H, K, generator=gen), dim=-1)
    w = k * (0.5 + torch.rand(T, H, K, generator=gen))
    beta = torch.rand(T, H, generator=gen)
    g = g_scale * torch.nn.functional.logsigmoid(2.0 + torch.randn(T, H, generator=gen)) if use_g else None
    return k, w, beta, g


def test_fast_path_imports_this_checkout():
    assert osdn_fast.__file__.startswith(str(__import__("pathlib").Path(__file__).parents[1]))


@pytest.mark.parametrize("BT", [16, 32, 64, 128])
@pytest.mark.parametrize("K,use_g", [(21, True), (67, True), (130, True), (67, False)])
def test_C3_wy_inverse_equals_float64_inverse_packed_short_chunks(BT, K, use_g, monkeypatch):
    """Three packed sequences whose lengths are not multiples of BT (one shorter than a chunk). The kernel
    not meant for this BT is removed, so BT ≤ 64 must run the blocked one and BT = 128 the row-by-row one."""
    monkeypatch.setattr(chunk_mod, "wy_inverse_kernel" if BT <= 64 else "wy_inverse_blocked_kernel", None)
    cu_host = np.array([0, BT + 5, BT + 5 + 11, 2 * BT + 16 + 3 * BT // 2 + 1])
    k, w, beta, g = inputs(int(cu_host[-1]), 2, K, seed=BT + K, use_g=use_g)
    M = wy_fast(k, w, beta, g, cu_host, BT)
    err = scaled_err(M, wy_ref(k, w, beta, g, cu_host, BT))
    print(f"BT={BT} K={K} g={use_g}: scaled error {err:.2e}")
    assert err <= BOUND


@pytest.mark.parametrize("BT", [32, 64])
def test_C3_wy_inverse_strong_gates(BT):
    """Log-gates of several units per token (10 × logsigmoid): e^{λ_i − λ_j} spans many decades and underflows
    to 0 within a chunk; masked entries must not turn into inf or NaN."""
    cu_host = np.array([0, 2 * BT + 7])
    k, w, beta, g = inputs(int(cu_host[-1]), 1, 32, seed=7, g_scale=10.0)
    assert g.min() < -5
    M = wy_fast(k, w, beta, g, cu_host, BT)
    assert torch.isfinite(M).all()
    err = scaled_err(M, wy_ref(k, w, beta, g, cu_host, BT))
    print(f"BT={BT} strong gates: scaled error {err:.2e}")
    assert err <= BOUND


@pytest.mark.parametrize("BT", [16, 32, 64, 128])
@pytest.mark.parametrize("c", [1.0, 2.0, 2.5])
def test_C3_wy_inverse_identical_keys_large_entries(BT, c):
    """Every token has k = e₁, k̃ = c e₁, β = 1: A = c × (strictly lower ones), exactly representable, whose
    inverse has entries −c (1 − c)^{i−j−1} below the diagonal: bidiagonal (1, −1) for c = 1, ±2 alternating
    for c = 2, growing as 1.5^{i−j} (to 1e22 at BT = 128) for c = 2.5. The block merges sum products of
    large entries that cancel (e.g. −M_11 A_10 M_00 for c = 1 leaves a single −1); a cancellation loss or a
    dropped merge term would show as an error far above rounding."""
    T, K = BT + 9, 24
    k = torch.zeros(T, 1, K)
    k[..., 0] = 1.0
    w = c * k
    beta = torch.ones(T, 1)
    cu_host = np.array([0, T])
    M = wy_fast(k, w, beta, None, cu_host, BT)
    R = wy_ref(k, w, beta, None, cu_host, BT)
    i = torch.arange(BT, dtype=torch.float64)
    expect = torch.where(i[:, None] > i[None, :], -c * (1 - c) ** (i[:, None] - i[None, :] - 1.0),
                         (i[:, None] == i[None, :]).double())
    assert scaled_err(R[:BT, 0], expect) < 1e-13  # the oracle itself
    err = scaled_err(M, R)
    print(f"BT={BT} identical keys c={c}: scaled error {err:.2e}")
    assert err <= BOUND
