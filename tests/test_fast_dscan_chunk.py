"""The chunk-form preconditioner scan (spec C1, C2; D4, E1, E2, E8) equals the token-serial scan.

``dscan_chunk`` (its forward and backward drivers: chunk-parallel kernels around two light serial carries) is a
drop-in replacement for ``dscan``'s ``dscan_fwd_kernel`` / ``dscan_bwd_kernel``: on the same float32 inputs
every output — write keys
K̃ = w, the iterates dprev = d_{t-1}, d_T, and in reverse the additions to dk and dβ, dα, dη, dd° and
dd_0 — must agree to float32 rounding, for every chunk size, with packed sequences, hard resets
(α = 0), no α, an active or inactive clip, η = 0, zero keys, with or without d_0 and ∂L/∂d_T.
The token-serial kernels are themselves checked against the float64 reference through ``chunk_osdn``
in tests/test_fast_chunk.py; the last tests here run that comparison with the chunk form as default.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import triton
from hypothesis import given
from hypothesis import strategies as st

from launches import spy_launches

from osdn_fast import chunk_osdn
from osdn_fast.compare import compare
from osdn_fast.ops.osdn import chunk as chunk_mod
from osdn_fast.ops.osdn.dscan import dscan_bwd_kernel, dscan_fwd_kernel
from osdn_fast.ops.osdn.dscan_chunk import dscan_chunk_backward, dscan_chunk_forward, dscan_chunk_sum_kernel
from osdn_fast.tolerance import BACKEND, assert_within

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32 = torch.float32
# scaled bound: max |chunk − token| ≤ TOL · max(1, max |token|), per output (float32 rounding of two orders
# of summation; measured worst over 300 random problems, T ≤ 129, K ≤ 33, C ∈ {16, 32, 64}: 1.9e-6 (dd0))
TOL = 1e-5
FWD = ("w", "dprev", "dT")
BWD = ("dk", "dbeta", "dalpha", "deta", "ddp", "dd0")


def make_problem(rng, T, H, K, cu, alpha="resets", eta=None, clip="default", zero_rows=0.0, d0=True, ddT=True,
                 beta_max=1.0):
    """Inputs of the d-scan kernels ([1, T, H, *] packed layout, as chunk.py passes them) plus the
    cotangents of the backward and the dk, dβ the backward adds into."""
    N = len(cu) - 1
    k = rng.standard_normal((1, T, H, K))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.2, (1, T, H, 1))
    if zero_rows:
        k[rng.uniform(size=(1, T, H)) < zero_rows] = 0.0
    P = dict(k=k, beta=rng.uniform(0.0, beta_max, (1, T, H)), d_prior=rng.uniform(0.3, 1.7, (H, K)),
             eta=rng.uniform(0.0, 1.9, H) if eta is None else np.full(H, float(eta)))
    if alpha is None:
        P["alpha"] = None
    else:
        a = rng.uniform(0.3, 1.0, (1, T, H))
        if alpha == "resets":
            a[rng.uniform(size=a.shape) < 0.15] = 0.0
        elif alpha == "many_resets":
            a[rng.uniform(size=a.shape) < 0.6] = 0.0
        elif alpha == "gates":  # no resets, Γ over a chunk far from 0: the carry maps are far from 0
            a = rng.uniform(0.9, 1.0, a.shape)
        elif alpha == "signed":  # outside APF's [0, 1]: negative and > 1, zeros too
            a = rng.uniform(-1.2, 1.2, a.shape)
            a[rng.uniform(size=a.shape) < 0.1] = 0.0
        P["alpha"] = a
    P["d0"] = rng.uniform(0.0, 2.0, (N, H, K)) if d0 else None
    P["dw"] = rng.standard_normal((1, T, H, K))
    P["ddT"] = rng.standard_normal((N, H, K)) if ddT else None
    P["dk"] = rng.standard_normal((1, T, H, K))
    P["dbeta"] = rng.standard_normal((1, T, H))
    if clip == "active":  # bounds inside the iterates' range: some coordinates are cut, some pass
        P["d_min"], P["d_max"] = 0.8, 1.2
    elif clip == "none":
        P["d_min"], P["d_max"] = float("-inf"), float("inf")
    else:
        P["d_min"], P["d_max"] = 0.0, float("inf")
    P["cu"] = np.asarray(cu, dtype=np.int64)
    return P


def _t(x):
    return None if x is None else torch.tensor(x, dtype=F32, device=DEVICE)


def run_scan(P, C=None):
    """Forward then backward of the d-scan: token-serial kernels (C None) or the chunk form with chunk C."""
    k, beta, alpha, eta, dp, d0 = (_t(P[n]) for n in ("k", "beta", "alpha", "eta", "d_prior", "d0"))
    _, T, H, K = k.shape
    cu_h = P["cu"]
    N = len(cu_h) - 1
    cu = torch.tensor(cu_h, dtype=torch.int32, device=DEVICE)
    BK = max(16, triton.next_power_of_2(K))
    lo, hi = float(P["d_min"]), float(P["d_max"])
    ha, hd0 = alpha is not None, d0 is not None
    dw, ddT, dk, dbeta = (_t(P[n]) for n in ("dw", "ddT", "dk", "dbeta"))
    dalpha = torch.zeros(1, T, H, device=DEVICE, dtype=F32)
    if C is None:
        w = torch.empty(1, T, H, K, device=DEVICE, dtype=F32)
        dprev = torch.empty(1, T, H, K, device=DEVICE, dtype=F32)
        dT = torch.empty(N, H, K, device=DEVICE, dtype=F32)
        dscan_fwd_kernel[(N, H)](k, beta, alpha, eta, dp, d0, w, dprev, dT, cu, lo, hi, H=H, K=K, BK=BK,
                                 HAS_ALPHA=ha, HAS_D0=hd0, STORE_DPREV=True, STORE_DT=True, num_warps=1)
        deta = torch.full((N, H), float("nan"), device=DEVICE, dtype=F32)
        ddp = torch.full((N, H, K), float("nan"), device=DEVICE, dtype=F32)
        dd0 = torch.full((N, H, K), float("nan"), device=DEVICE, dtype=F32)
        dscan_bwd_kernel[(N, H)](k, beta, alpha, eta, dp, dprev, dw, ddT, cu, lo, hi, dk, dbeta, dalpha, deta, ddp,
                                 dd0, H=H, K=K, BK=BK, HAS_ALPHA=ha, HAS_DDT=ddT is not None, num_warps=1)
    else:
        w, saved, dT, dprev = dscan_chunk_forward(k, beta, alpha, eta, dp, d0, cu, cu_h, lo, hi, C, 4, "ieee",
                                                  store_dT=True, store_dprev=True)
        da, deta, ddp, dd0 = dscan_chunk_backward(k, beta, alpha, eta, dp, saved, dw, ddT, cu, N, lo, hi, C, 4,
                                                  "ieee", dk, dbeta)
        if da is not None:
            dalpha = da
    out = dict(w=w, dprev=dprev, dT=dT, dk=dk, dbeta=dbeta, dalpha=dalpha, deta=deta, ddp=ddp, dd0=dd0)
    return {n: x.cpu().numpy().astype(np.float64) for n, x in out.items()}


def scan_float64(P):
    """Float64 oracle of the d-scan (E1, E2, E3, E7, E8) and its reverse mode (torch autograd), per sequence,
    in the kernels' output layout: w, dprev, dT and the backward's dk, dβ additions, dα, dη, dd°, dd_0."""
    f64 = torch.float64
    k_all = torch.tensor(P["k"], dtype=f64)[0]
    _, H, K = k_all.shape
    cu = P["cu"]
    N = len(cu) - 1
    lo, hi = float(P["d_min"]), float(P["d_max"])
    T = k_all.shape[0]
    out = {n: np.zeros(s) for n, s in dict(w=(1, T, H, K), dprev=(1, T, H, K), dT=(N, H, K), dk=(1, T, H, K),
                                             dbeta=(1, T, H), dalpha=(1, T, H), deta=(N, H), ddp=(N, H, K),
                                             dd0=(N, H, K)).items()}
    out["dk"] += P["dk"]
    out["dbeta"] += P["dbeta"]
    for n in range(N):
        a_, b_ = int(cu[n]), int(cu[n + 1])
        k = k_all[a_:b_].clone().requires_grad_()
        beta = torch.tensor(P["beta"][0, a_:b_], dtype=f64, requires_grad=True)
        alpha = None if P["alpha"] is None else torch.tensor(P["alpha"][0, a_:b_], dtype=f64, requires_grad=True)
        eta = torch.tensor(P["eta"], dtype=f64, requires_grad=True)
        dp = torch.tensor(P["d_prior"], dtype=f64, requires_grad=True)
        d0 = (torch.tensor(P["d0"][n], dtype=f64) if P["d0"] is not None else dp.detach().clone()).requires_grad_()
        d, ws, dprevs, loss = d0, [], [], 0.0
        dw = torch.tensor(P["dw"][0, a_:b_], dtype=f64)
        for t in range(b_ - a_):
            dprevs.append(d)
            dbar = d if alpha is None else dp + alpha[t, :, None] * (d - dp)
            wt = torch.clamp(dbar, lo, hi) * k[t]
            ws.append(wt)
            loss = loss + (dw[t] * wt).sum()
            k2 = k[t] * k[t]
            s = k2.sum(-1, keepdim=True)
            u = beta[t, :, None] * k2
            rho = 1.0 - (u * dbar).sum(-1, keepdim=True)
            step = torch.where(s > 0, eta[:, None] * rho / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
            d = dbar + step * u
        if P["ddT"] is not None:
            loss = loss + (torch.tensor(P["ddT"][n], dtype=f64) * d).sum()
        leaves = [k, beta, eta, dp, d0] + ([alpha] if alpha is not None else [])
        gr = torch.autograd.grad(loss, leaves, allow_unused=True) if torch.is_tensor(loss) else [None] * len(leaves)
        z = lambda g, like: np.zeros(like.shape) if g is None else g.numpy()
        if b_ > a_:
            out["w"][0, a_:b_] = torch.stack(ws).detach().numpy()
            out["dprev"][0, a_:b_] = torch.stack(dprevs).detach().numpy()
        out["dT"][n] = d.detach().numpy()
        out["dk"][0, a_:b_] += z(gr[0], k)
        out["dbeta"][0, a_:b_] += z(gr[1], beta)
        out["deta"][n] = z(gr[2], eta)
        out["ddp"][n] = z(gr[3], dp)
        out["dd0"][n] = z(gr[4], d0)
        if alpha is not None:
            out["dalpha"][0, a_:b_] = z(gr[5], alpha)
    return out


def scaled_errors(P, C):
    tok, chk = run_scan(P), run_scan(P, C)
    errs = {}
    for n in FWD + BWD:
        assert np.isfinite(tok[n]).all(), f"token-serial {n} not finite"  # guards the comparison itself
        assert np.isfinite(chk[n]).all(), f"chunk form {n} not finite (C={C})"
        errs[n] = float(np.max(np.abs(chk[n] - tok[n]), initial=0.0) / max(1.0, np.max(np.abs(tok[n]), initial=0.0)))
    return errs, tok, chk


def check(P, C):
    """Chunk form = token-serial scan (TOL), and both = the float64 oracle (TOL), output by output."""
    errs, tok, chk = scaled_errors(P, C)
    bad = {n: e for n, e in errs.items() if not e <= TOL}
    assert not bad, f"chunk form (C={C}) differs from the token-serial scan: {bad}"
    ref = scan_float64(P)
    for name, got in (("token-serial", tok), (f"chunk form C={C}", chk)):
        e64 = {n: float(np.max(np.abs(got[n] - ref[n]), initial=0.0) / max(1.0, np.max(np.abs(ref[n]), initial=0.0)))
               for n in FWD + BWD}
        bad = {n: e for n, e in e64.items() if not e <= TOL}
        assert not bad, f"{name} differs from the float64 scan: {bad}"
    return tok, chk


def stable_beta(P):
    """β scaled down where the learner's step would expand: |1 − η⟨u_t, û_t⟩| ≤ 1, i.e.
    η β_t² Σk⁴/‖k‖² ≤ 2 (docs/limits: outside it d grows geometrically and both forms only agree to
    rounding relative to the largest intermediate, see test_C1_unstable_regime_errors_track_magnitudes)."""
    k, b = P["k"], P["beta"]
    k2 = (k * k).sum(-1)
    c = P["eta"][None, None, :] * b * b * np.where(k2 > 0, (k ** 4).sum(-1) / np.where(k2 > 0, k2, 1.0), 0.0)
    return b * np.minimum(1.0, np.sqrt(2.0 / np.maximum(c, 1e-300)))


@st.composite
def scan_problems(draw):
    T = draw(st.integers(1, 90))
    H = draw(st.integers(1, 2))
    K = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 20]))
    n_seq = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, T), min_size=n_seq - 1, max_size=n_seq - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P = make_problem(
        rng, T, H, K, [0] + cuts + [T],
        alpha=draw(st.sampled_from([None, "plain", "resets", "many_resets"])),
        eta=draw(st.sampled_from([None, None, 0.0])),
        clip=draw(st.sampled_from(["default", "active", "none"])),
        zero_rows=draw(st.sampled_from([0.0, 0.2])),
        d0=draw(st.booleans()), ddT=draw(st.booleans()),
        beta_max=draw(st.sampled_from([1.0, 2.0])),
    )
    P["beta"] = stable_beta(P)
    return P


@pytest.mark.parametrize("seed", [0, 3, 6, 9])
def test_C1_unstable_regime_errors_track_magnitudes(seed):
    """Outside the stable regime (η β² Σk⁴/‖k‖² up to ~10: a step multiplies the deviation by up to −9)
    iterates and adjoints grow geometrically, and small outputs are differences of large ones (found by
    Hypothesis: K = 1, β ≤ 2, η = 1.74, T = 65, C = 16, where dd_0 ≈ 0.2 came from adjoints of ~5e3).
    Both forms stay within rounding of the float64 scan relative to the largest quantity in play.
    Measured on seeds 0–10 (max error / largest magnitude): token-serial ≤ 1.8e-6, chunk form ≤ 1.2e-5 —
    the triangular solve of C1 loses up to ~10x more than the token walk here; bound 5e-5."""
    P = make_problem(np.random.default_rng(seed), 65, 1, 1, [0, 65], alpha=None, eta=1.74, d0=False, ddT=False,
                     beta_max=2.0)
    ref = scan_float64(P)
    big = max(float(np.max(np.abs(ref[n]), initial=0.0)) for n in FWD + BWD)
    assert big > 100.0  # the regime is really expansive
    for got in (run_scan(P), run_scan(P, 16)):
        for n in FWD + BWD:
            assert np.max(np.abs(got[n] - ref[n]), initial=0.0) <= 5e-5 * big, n


@given(scan_problems(), st.sampled_from([16, 32, 64]))
def test_C1_chunk_scan_equals_token_scan_forward_and_backward(P, C):
    check(P, C)


@pytest.mark.parametrize("C", [16, 32, 64])
@pytest.mark.parametrize("case", [
    dict(T=1, cu=[0, 1]),
    dict(T=1, cu=[0, 1], alpha=None, d0=False, ddT=False),
    dict(T=70, cu=[0, 70]),                       # not a multiple of any C
    dict(T=64, cu=[0, 64], alpha=None),           # exactly full chunks
    dict(T=83, cu=[0, 0, 5, 40, 40, 83]),         # packed, with empty sequences
    dict(T=50, cu=[0, 50], alpha="many_resets", clip="active"),
    dict(T=50, cu=[0, 20, 50], eta=0.0, clip="none"),
    dict(T=45, cu=[0, 45], zero_rows=0.3, d0=False, ddT=False),
    dict(T=45, cu=[0, 17, 45], alpha="signed"),   # sign parity of the gate ratios
], ids=["T1", "T1-bare", "T70", "T64-noalpha", "packed-empty", "resets-clip", "eta0-noclip", "zero-keys",
        "signed-alpha"])
def test_C1_named_cases(case, C):
    case = dict(case)
    T, cu = case.pop("T"), case.pop("cu")
    P = make_problem(np.random.default_rng(T * 7 + C), T, 2, case.pop("K", 5), cu, **case)
    check(P, C)


def test_clip_is_active_and_inactive_in_the_clip_cases():
    """The 'active' clip case really cuts coordinates (and lets others pass), so the clip gradient mask of E2
    is exercised; without it the K̃ = p ⊙ k of both forms would be trivially equal."""
    P = make_problem(np.random.default_rng(0), 60, 2, 6, [0, 60], clip="active")
    tok, _ = check(P, 32)
    a = P["alpha"][..., None]
    dbar = P["d_prior"] + a * (tok["dprev"] - P["d_prior"])  # E1
    cut = (dbar < 0.8) | (dbar > 1.2)
    assert cut.any() and (~cut).any()


def test_alpha_zero_resets_exactly_inside_a_chunk():
    """With α_t = 0 the learner restarts at d°: dprev after the reset does not depend on anything before it,
    in the chunk form too (no quotient of gate products, spec §6)."""
    rng = np.random.default_rng(5)
    P = make_problem(rng, 40, 1, 4, [0, 40], alpha="plain")
    P["alpha"][0, 10, 0] = 0.0
    P2 = {n: (x.copy() if isinstance(x, np.ndarray) else x) for n, x in P.items()}
    P2["k"][0, :10] = rng.standard_normal((10, 1, 4))
    P2["d0"] = rng.uniform(0.0, 2.0, P["d0"].shape)
    a, b = run_scan(P, 32), run_scan(P2, 32)
    np.testing.assert_array_equal(a["w"][0, 10:], b["w"][0, 10:])
    np.testing.assert_array_equal(a["dT"], b["dT"])
    assert not np.array_equal(a["w"][0, :10], b["w"][0, :10])
    check(P, 32)


def test_nan_gate_propagates_in_the_chunk_form():
    """A NaN α at token t reaches d_T and the write keys from t on (spec §6: never silently replaced)."""
    P = make_problem(np.random.default_rng(2), 40, 1, 4, [0, 40], alpha="plain")
    P["alpha"][0, 21, 0] = np.nan
    out = run_scan(P, 16)
    assert np.isfinite(out["w"][0, :16]).all()
    assert not np.isfinite(out["w"][0, 21]).all() and not np.isfinite(out["dT"]).all()


# --- chunk_osdn with the chunk-form scan (default) vs the token-serial escape hatch -----------------------------

def test_chunk_form_is_the_default_and_the_escape_hatch_is_checked(monkeypatch):
    monkeypatch.delenv("OSDN_DSCAN", raising=False)
    assert chunk_mod._dscan_mode() == "chunk"
    monkeypatch.setenv("OSDN_DSCAN", "token")
    assert chunk_mod._dscan_mode() == "token"
    monkeypatch.setenv("OSDN_DSCAN", "serial")
    with pytest.raises(ValueError, match="OSDN_DSCAN"):
        chunk_mod._dscan_mode()
    monkeypatch.setenv("OSDN_DSCAN", "chunk")
    monkeypatch.setenv("OSDN_DSCAN_CHUNK", "8")
    x = torch.zeros(1, 4, 1, 2, device=DEVICE)
    with pytest.raises(ValueError, match="OSDN_DSCAN_CHUNK"):
        chunk_osdn(x, x, x, torch.zeros(1, 4, 1, device=DEVICE))


@pytest.mark.parametrize("C,DC,T,SEG", [(16, None, 37, None), (64, None, 37, None), (64, 16, 37, None), (32, 16, 150, 2)],
                         ids=["C16", "C64", "C64-scan16", "C32-scan16-two-level"])
def test_chunk_osdn_same_results_with_either_scan(monkeypatch, C, DC, T, SEG):
    """chunk_osdn end to end (forward, d_T, every gradient) with the token-serial and the chunk-form scan; the
    third case runs the d-scan on shorter chunks than the state part (OSDN_DSCAN_CHUNK), the last one the two-level
    carry (OSDN_DSCAN_SEG=2: each sequence's 10 scan chunks in 5 segments)."""
    if DC is not None:
        monkeypatch.setenv("OSDN_DSCAN_CHUNK", str(DC))
    maps = []
    if SEG is not None:
        monkeypatch.setenv("OSDN_DSCAN_SEG", str(SEG))
        from osdn_fast.ops.osdn import dscan_chunk as dc_mod
        real = dc_mod._segment_maps
        monkeypatch.setattr(dc_mod, "_segment_maps", lambda *a: maps.append(a[5]) or real(*a))
    rng = np.random.default_rng(C)
    B, H, K, V = 2, 2, 6, 5
    a = rng.uniform(0.3, 1.0, (B, T, H))
    a[rng.uniform(size=a.shape) < 0.15] = 0.0
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)),
              v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)), alpha=a,
              g=-rng.uniform(0, 0.3, (B, T, H)), eta=rng.uniform(0, 1.9, H), d_prior=rng.uniform(0.3, 1.7, (H, K)),
              initial_precond=rng.uniform(0, 2, (B, H, K)))
    res = {}
    for mode in ("token", "chunk"):
        monkeypatch.setenv("OSDN_DSCAN", mode)
        t = {n: torch.tensor(x, dtype=F32, device=DEVICE, requires_grad=True) for n, x in kw.items()}
        o, _, dT = chunk_osdn(**t, output_final_state=True, d_min=0.6, d_max=1.3, use_qk_l2norm_in_kernel=True,
                              chunk_size=C)
        (o.square().sum() + dT.sum()).backward()
        res[mode] = dict(o=o.detach(), dT=dT.detach(), **{"d" + n: x.grad for n, x in t.items()})
    for n, x in res["token"].items():
        y = res["chunk"][n]
        err = float((x - y).abs().max() / max(1.0, float(x.abs().max())))
        assert err <= TOL, f"{n}: token vs chunk scan differ by {err:.2e} (C={C})"
    # the forward and the reverse carry ran on two levels, on the maps the forward composed once (Md: a[4])
    assert len(maps) == (1 if SEG else 0)


@pytest.mark.parametrize("bk", [2, 8], ids=["key-blocks", "one-block"])
@pytest.mark.parametrize("has_alpha", [True, False])
def test_per_chunk_partials_sum_to_each_sequences_deta_and_ddp(has_alpha, bk):
    """``dscan_chunk_sum_kernel`` turns the per-chunk partials of ∂L/∂η and ∂L/∂d° into per-sequence sums, blocks of
    chunks at a time and blocks of key columns a program: sequences of 0, 1, 37 and 300 chunks (several blocks, a
    partial last one), K = 5 in blocks of 2 (a partial last block) or in one block, equal the float64 sums to float32
    rounding; without α (E1 has no d° term) ∂L/∂d° is exactly 0 and the partials are not read."""
    rng = np.random.default_rng(5)
    H, K, n_chunks = 3, 5, [0, 1, 37, 300]
    off = np.concatenate([[0], np.cumsum(n_chunks)])
    NT = int(off[-1])
    peta = rng.standard_normal((NT, H))
    pdp = rng.standard_normal((NT, H, K))
    t = lambda x: torch.tensor(x, dtype=F32, device=DEVICE)
    N = len(n_chunks)
    deta = torch.full((N, H), float("nan"), device=DEVICE)
    ddp = torch.full((N, H, K), float("nan"), device=DEVICE)
    dscan_chunk_sum_kernel[(N, H, -(-K // bk))](t(peta), t(pdp) if has_alpha else None,
                                                torch.tensor(off, dtype=torch.int32, device=DEVICE), deta, ddp,
                                                H=H, K=K, BK=bk, BC=16 if has_alpha else 128, HAS_ALPHA=has_alpha)
    want_eta = np.stack([peta[off[n]:off[n + 1]].sum(0) for n in range(N)])
    want_dp = np.stack([pdp[off[n]:off[n + 1]].sum(0) for n in range(N)]) if has_alpha else np.zeros((N, H, K))
    np.testing.assert_allclose(deta.cpu().numpy(), want_eta, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ddp.cpu().numpy(), want_dp, rtol=0, atol=1e-4 if has_alpha else 0)


# Found by the thorough Hypothesis profile (tests/test_fast_chunk.py, float32, seed 1851124015, fourth session) and
# present before that session's changes too (commit 3a4d419): K = V = 1, B = 2, T = 34, η = 0.14, plain config,
# chunk 16. The error is not the chunk-form d-scan's (fifth session, diagnosis in osdn_fast/NOTES.md): it is the
# state part's ∂L/∂K̃ (C3 reversed), which ∂L/∂η amplifies here; which d-scan passes depends on rounding luck.
_DETA_K1 = Path(__file__).parent / "data" / "chunk_scan_deta_k1.npz"


def _deta_k1_problem():
    d = np.load(_DETA_K1)
    return {n: (d[n].item() if d[n].ndim == 0 else d[n]) for n in d.files}


@pytest.mark.parametrize("scan", [pytest.param(s_, marks=pytest.mark.xfail(
    strict=True, reason=f"known, open: deta errs {e_} > 1e-4 on this example ({s_} d-scan, tiled dh walk), from the C3 "
                        "backward's dK̃ (osdn_fast/NOTES.md), not from the d-scan")) for s_, e_ in (("token", "1.8e-4"),
                                                                                                ("chunk", "2.9e-4"))])
def test_known_deta_precision_gap_on_a_K1_example(monkeypatch, scan):
    """∂L/∂η of chunk_osdn is within the float32 bound on this example, with either d-scan (C1 chunk form or the
    token-serial D4 walk).

    ∂L/∂η = Σ_t ρ_t s_t (E8) sums to −0.079 here (per sequence +2.776 and −2.855, below the 0.1 floor), and its
    derivative with respect to the cotangent ∂L/∂K̃ that the state part (C3 reversed) hands the d-scan has
    ℓ1 norm 135. That ∂L/∂K̃ is assembled from terms of magnitude 15–25 that cancel to entries as small as 0.14,
    so it errs up to 5e-6 absolute, and ∂L/∂η errs 2.9e-4 scaled with the chunk-form d-scan and 1.8e-4 with the
    token walk (tiled dh walk, the default here since the sixth session; with the full dh walk 3.3e-4 and 7.1e-5,
    the token walk's pass a lucky draw: 1-ulp changes of K̃ give it up to 2.7e-4, and at state chunks 32 or 64 it
    errs 2.6e-4 too). Given the same ∂L/∂K̃ both d-scans match the float64 scan to 1e-7 (chunk) and 3e-6 (token).
    Strict xfails: a known, open precision gap of the C3 backward (osdn_fast/NOTES.md), not passing tests; the marks
    must go when ∂L/∂K̃ is fixed."""
    monkeypatch.setenv("OSDN_DSCAN", scan)
    errs, _, _ = compare(chunk_osdn, _deta_k1_problem(), torch.float32, DEVICE, chunk_size=16)
    assert_within(errs, torch.float32, BACKEND, what=f"chunk_osdn, {scan} d-scan, K = 1 example")


# --- the two-level carry (segments of a few chunks: maps composed in parallel, segments walked serially) ---------

@pytest.mark.parametrize("C", [16, 32])
@pytest.mark.parametrize("case", [
    dict(T=150, cu=[0, 150]),                                  # 10 / 5 chunks: 5 / 3 segments of 2 chunks
    dict(T=170, cu=[0, 0, 3, 160, 160, 170], alpha="signed"),  # packed, empty and one-chunk sequences
    dict(T=161, cu=[0, 161], alpha=None, d0=False, ddT=False),
    dict(T=140, cu=[0, 140], alpha="many_resets", clip="active"),
    dict(T=150, cu=[0, 150], K=40, zero_rows=0.2, alpha="gates", map_bn=32),  # two column blocks of the maps
    dict(T=150, cu=[0, 10, 150], eta=0.0, clip="none"),
    dict(T=170, cu=[0, 5, 170], alpha="gates", d0=False),      # a map far from both 0 and its transpose
], ids=["one-seq", "packed-empty", "bare", "resets-clip", "K40-zero-keys", "eta0", "gates"])
def test_two_level_carry_equals_the_serial_carry(monkeypatch, case, C):
    """With OSDN_DSCAN_SEG=2 every sequence of more than 4 chunks is cut into segments of 2 chunks; the composed
    segment maps Φ (A = Γ_n I − η Ûᵀ diag(R(n, ·)) M_d diag(Γ) U per chunk, C1) and the adjoint maps Φᵀ carry
    δ and z across segments. Every output and gradient equals the token-serial scan and the float64 oracle.
    A reset (α = 0) in a segment makes its map 0, so the cases without resets ("bare", "K40-zero-keys", "gates")
    are the ones that tell Φ from Φᵀ (the reverse walk with Φ in place of Φᵀ fails them)."""
    from osdn_fast.ops.osdn.dscan_chunk import scan_segment_length
    monkeypatch.setenv("OSDN_DSCAN_SEG", "2")
    case = dict(case)
    T, cu = case.pop("T"), case.pop("cu")
    if "map_bn" in case:  # columns per program of the map kernel (default: all of them up to 128)
        monkeypatch.setenv("OSDN_DSCAN_MAP_BN", str(case.pop("map_bn")))
    assert scan_segment_length(C, 2, np.asarray(cu)) == 2  # the two-level path really runs
    P = make_problem(np.random.default_rng(T + C), T, 2, case.pop("K", 5), cu, **case)
    P["beta"] = stable_beta(P)
    check(P, C)


def _segment_maps_of(P, cu, K, LS, w_dtype, C=16):
    """The two-level carry's segment maps Φ [NS, H, K, K] (C1) of problem P: M_d by ``dscan_chunk_prep_kernel``, then
    ``dscan_chunk_forward``'s ``_segment_maps`` for write keys stored in ``w_dtype`` (segments of LS chunks of C)."""
    import osdn_fast.ops.osdn.dscan_chunk as dc
    from osdn_fast.ops.osdn.utils import chunk_index_tensors, next_pow2, scan_segment_tensors
    k, beta, alpha, eta = (_t(P[n]) for n in ("k", "beta", "alpha", "eta"))
    T, H, BK = k.shape[1], k.shape[2], next_pow2(K)
    cu_h = np.asarray(cu)
    idx, _, NT = chunk_index_tensors(cu_h, C, DEVICE)
    Md = torch.empty(1, T, H, C, device=DEVICE, dtype=F32)
    dc.dscan_chunk_prep_kernel[(NT, H)](k, beta, alpha, eta, torch.tensor(cu_h, dtype=torch.int32, device=DEVICE), idx,
                                        Md, H=H, K=K, BT=C, BKC=min(BK, 64), HAS_ALPHA=alpha is not None, PREC="ieee",
                                        num_warps=1)
    segs = scan_segment_tensors(cu_h, C, LS, DEVICE)
    return dc._segment_maps(k, beta, alpha, eta, Md, segs, H, K, BK, C, w_dtype, LS).cpu().numpy()


@pytest.mark.parametrize("LS,GS", [(4, 2), (6, 4), (3, 2)], ids=["two-groups", "partial-group", "odd-segments"])
@pytest.mark.parametrize("case", [dict(T=170, cu=[0, 5, 170], alpha="gates", K=5),
                                  dict(T=170, cu=[0, 0, 3, 160, 160, 170], alpha="signed", K=70)],
                         ids=["gates", "packed-signed-K70"])
def test_group_factors_compose_the_same_segment_maps(monkeypatch, case, LS, GS):
    """The segment maps Φ = A_m ⋯ A_1 (C1) composed GS chunks a step from the group factors of
    ``dscan_chunk_group_kernel`` (B = Γ_g I − Σ_c P_c Z_c per group) equal the maps composed one chunk a step, to
    float32 rounding: groups that fill a segment, a short last group, segments of an odd number of chunks, packed
    and empty sequences, gates of either sign, and K = 70 (two column blocks of the factors)."""
    case = dict(case)
    T, cu, K = case.pop("T"), case.pop("cu"), case.pop("K")
    P = make_problem(np.random.default_rng(T + K), T, 2, K, cu, **case)
    P["beta"] = stable_beta(P)
    maps = {}
    for gs in (0, GS):
        monkeypatch.setenv("OSDN_DSCAN_MAP_GS", str(gs))
        maps[gs] = _segment_maps_of(P, cu, K, LS, F32)
    assert np.abs(maps[0]).max() > 0.1  # the maps are not all reset to 0
    np.testing.assert_allclose(maps[GS], maps[0], rtol=0, atol=2e-6)


def _maps(monkeypatch, P, cu, K, LS, f16):
    """The segment maps Φ [NS, H, K, K] of problem P (C1), composed by ``dscan_chunk_map_f16_kernel`` (transposed,
    float16 operands; with its fallback) or by ``dscan_chunk_map_kernel`` (float32 products in the interpreter)."""
    monkeypatch.setenv("OSDN_DSCAN_MAP_F16", "1" if f16 else "0")
    monkeypatch.setenv("OSDN_DSCAN_MAP_PREC", "tf32")  # the bfloat16 problems' maps, the only ones it takes
    return _segment_maps_of(P, cu, K, LS, torch.bfloat16)


@pytest.mark.parametrize("LS,rows", [(2, None), (4, None), (4, 64)], ids=["LS2", "LS4", "LS4-rows64"])
@pytest.mark.parametrize("case", [dict(T=170, cu=[0, 5, 170], alpha="gates", K=5),
                                  dict(T=170, cu=[0, 0, 3, 160, 160, 170], alpha="signed", K=70),
                                  dict(T=150, cu=[0, 150], alpha=None, K=128, zero_rows=0.2)],
                         ids=["gates", "packed-signed-K70", "K128-zero-keys"])
def test_float16_transposed_maps_compose_the_same_segment_maps(monkeypatch, case, LS, rows):
    """Ψ = Φᵀ composed with float16 operands (``dscan_chunk_map_f16_kernel``: Ψ ← Γ_n Ψ − η (Ψ Ûᵀ) W Û, C1 transposed)
    gives the maps Φ = A_m ⋯ A_1 to float16 rounding: within 5e-3 of max |Φ| (measured worst 7.2e-4 over 24 random
    problems with K up to 128, gates of either sign, resets and segments of 2 to 8 chunks), with no segment falling
    back to the float32 kernel; also with the rows of Ψ split over programs (OSDN_DSCAN_MAP_F16_ROWS=64: two row
    blocks at K = 70 and 128)."""
    import osdn_fast.ops.osdn.dscan_chunk as dc
    if rows:
        monkeypatch.setenv("OSDN_DSCAN_MAP_F16_ROWS", str(rows))
    case = dict(case)
    T, cu, K = case.pop("T"), case.pop("cu"), case.pop("K")
    P = make_problem(np.random.default_rng(T + K + LS), T, 2, K, cu, **case)
    P["beta"] = stable_beta(P)
    ref = _maps(monkeypatch, P, cu, K, LS, f16=False)
    launched = spy_launches(monkeypatch, dc, ["dscan_chunk_map_f16_kernel"])
    fallback = []
    plain = dc.dscan_chunk_map_kernel

    class Recompute:  # the plain kernel after the float16 one: record which segments it was asked to redo
        def __getitem__(self, grid):
            def run(*a, **kw):
                if kw.get("FLAGGED"):
                    fallback.append(int(kw["bad"].sum()))
                return plain[grid](*a, **kw)
            return run

    monkeypatch.setattr(dc, "dscan_chunk_map_kernel", Recompute())
    got = _maps(monkeypatch, P, cu, K, LS, f16=True)
    assert launched == ["dscan_chunk_map_f16_kernel"] and fallback == [0]
    assert np.abs(ref).max() > 0.1  # the maps are not all reset to 0
    assert np.abs(got - ref).max() <= 5e-3 * np.abs(ref).max()


@given(st.integers(0, 2**31 - 1), st.sampled_from([2, 3, 4, 8]), st.sampled_from([1, 3, 17, 64, 70, 128]),
       st.sampled_from([None, "resets", "gates", "signed"]), st.booleans(), st.sampled_from([None, 16, 64]))
def test_float16_transposed_maps_property(seed, LS, K, alpha, packed, rows):
    """The float16 transposed maps equal the float32 maps to 5e-3 of max |Φ| (C1) over drawn problems: K from 1 to 128,
    segments of 2 to 8 chunks, gates of either sign, resets, packed sequences with empty ones, Ψ's rows in one block
    or in blocks of 16 or 64."""
    rng = np.random.default_rng(seed)
    T = int(rng.integers(20, 180))
    cu = [0, T] if not packed else sorted([0, T] + rng.integers(0, T + 1, size=2).tolist())
    P = make_problem(rng, T, 2, K, cu, alpha=alpha)
    P["beta"] = stable_beta(P)
    with pytest.MonkeyPatch.context() as mp:
        if rows:
            mp.setenv("OSDN_DSCAN_MAP_F16_ROWS", str(rows))
        ref = _maps(mp, P, cu, K, LS, f16=False)
        got = _maps(mp, P, cu, K, LS, f16=True)
    assert np.abs(got - ref).max() <= 5e-3 * max(np.abs(ref).max(), 1.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("rows", [None, 2], ids=["one-block", "row-blocks"])
def test_float16_transposed_maps_fall_back_where_an_operand_overflows(monkeypatch, rows):
    """Where the learner expands (unstable inputs, spec "Numerical ranges": keys of norm 3, β = 1, η = 1.9, so each
    step multiplies by about 1 − 1.9 · 9) a float16 operand overflows; such a segment is flagged and composed again by
    the float32 kernel, as is one with a NaN gate: every map equals that kernel's, NaN where its are. With the rows of
    Ψ split over programs (2 rows each, K = 3) any block's overflow flags its segment."""
    if rows:
        monkeypatch.setenv("OSDN_DSCAN_MAP_F16_ROWS", str(rows))
    P = make_problem(np.random.default_rng(5), 120, 1, 3, [0, 40, 120], alpha="gates", eta=1.9)
    P["k"] = 3.0 * P["k"] / np.linalg.norm(P["k"], axis=-1, keepdims=True)
    P["beta"] = np.ones_like(P["beta"])
    P["alpha"][0, 70, 0] = np.nan
    ref = _maps(monkeypatch, P, [0, 40, 120], 3, 2, f16=False)
    got = _maps(monkeypatch, P, [0, 40, 120], 3, 2, f16=True)
    assert np.isnan(ref).any() and np.abs(ref[np.isfinite(ref)]).max() > 65504  # overflow and NaN both occur
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("full,K", [(True, 20), (False, 4)], ids=["full-K20", "plain-K4"])
def test_float16_transposed_maps_end_to_end_float16_within_bounds(monkeypatch, full, K):
    """chunk_osdn on float16 inputs with the two-level carry (segments of 2 chunks) and the float16 transposed maps:
    outputs and every gradient within the float16 bounds against the float64 oracle; the full problem (gates, APF with
    resets, η per head, d°, clip, initial states) and the plain one, whose undecayed maps carry the earlier segments
    (with Φ in place of Φᵀ it fails)."""
    import osdn_fast.ops.osdn.dscan_chunk as dc
    from osdn_fast.tolerance import realistic_problem
    monkeypatch.setenv("OSDN_DSCAN_SEG", "2")
    monkeypatch.setenv("OSDN_DSCAN_MAP_F16", "1")
    monkeypatch.setenv("OSDN_DSCAN_MAP_PREC", "tf32")
    launched = spy_launches(monkeypatch, dc, ["dscan_chunk_map_f16_kernel"])
    kw = realistic_problem(B=1, T=200, H=2, K=K, V=12, seed=3, full=full)
    errs, _, _ = compare(chunk_osdn, kw, torch.float16, DEVICE, chunk_size=16)
    assert launched == ["dscan_chunk_map_f16_kernel"]
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn, two-level carry, float16 transposed maps")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA streams)")
def test_gpu_maps_on_a_second_stream_change_nothing(monkeypatch):
    """With OSDN_DSCAN_MAP_STREAM=1 the segment maps run on a second CUDA stream beside the two-level carry's first
    pass: bf16 at (1, 4096, 2, 64), where the two-level carry runs by default, with the float16 and the float32 maps,
    every output and gradient is bit-identical to the maps on the caller's stream."""
    from osdn_fast.compare import to_torch
    from osdn_fast.tolerance import realistic_problem
    kw = realistic_problem(B=1, T=4096, H=2, K=64, V=64, seed=2, full=True)

    def run():
        x = to_torch(kw, torch.bfloat16, "cuda")
        o, h, d = chunk_osdn(**x, output_final_state=True)
        torch.autograd.backward([o, h, d], [torch.ones_like(o), torch.ones_like(h), torch.ones_like(d)])
        return [o, h, d] + [v.grad for v in x.values() if isinstance(v, torch.Tensor) and v.grad is not None]

    for f16 in ("0", "1"):
        monkeypatch.setenv("OSDN_DSCAN_MAP_F16", f16)
        monkeypatch.setenv("OSDN_DSCAN_MAP_STREAM", "0")
        base = run()
        monkeypatch.setenv("OSDN_DSCAN_MAP_STREAM", "1")
        for a, b in zip(run(), base):
            assert torch.equal(a, b)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "out-kernel"])
def test_two_level_carry_writes_the_write_keys_in_its_second_pass(monkeypatch, fuse):
    """Where the two-level carry runs, its second forward pass writes the write keys K̃ (C2) and d_{t-1} from each
    chunk's δ⁰ and steps w as it walks (``dscan_chunk_fwd_kernel`` with STORE_W), and ``dscan_chunk_out_kernel`` does
    not run; with OSDN_DSCAN_FUSE_OUT=0 that kernel writes them after the pass. Both equal the token-serial scan and the
    float64 oracle (gates with α, so the ratios R(i-1, j) of C1 are not all 1)."""
    import osdn_fast.ops.osdn.dscan_chunk as dc
    monkeypatch.setenv("OSDN_DSCAN_SEG", "2")
    monkeypatch.setenv("OSDN_DSCAN_FUSE_OUT", "1" if fuse else "0")
    launched = spy_launches(monkeypatch, dc, ["dscan_chunk_out_kernel"])
    P = make_problem(np.random.default_rng(7), 170, 2, 5, [0, 5, 170], alpha="gates", clip="active")
    P["beta"] = stable_beta(P)
    check(P, 16)
    assert (len(launched) == 0) == fuse, f"dscan_chunk_out_kernel launched {len(launched)} times (fused: {fuse})"


@pytest.mark.parametrize("case", [
    dict(T=150, cu=[0, 150], K=40, zero_rows=0.2, alpha="gates", clip="active"),
    dict(T=170, cu=[0, 0, 3, 160, 160, 170], K=5, alpha="signed"),
], ids=["K40-zero-keys-clip", "packed-signed"])
def test_backward_kernel_per_row_factors_with_zero_keys_clip_and_signed_gates(case):
    """``dscan_chunk_bwd_kernel`` forms ∂L/∂k and ∂L/∂β (E8 reversed) from per-row factors (c₁ d̄ + c₂ z + c₃ times
    k): they equal the token-serial scan and the float64 oracle with zero keys (where û is 0 and ‖k‖² is made safe),
    the clip active, and gates of either sign (a sign flipped in one factor fails here)."""
    case = dict(case)
    T, cu = case.pop("T"), case.pop("cu")
    P = make_problem(np.random.default_rng(T + 3), T, 2, case.pop("K"), cu, **case)
    P["beta"] = stable_beta(P)
    check(P, 16)


@pytest.mark.parametrize("source", ["int8", "write-keys"])
@pytest.mark.parametrize("seg", [2, 0], ids=["two-level-pass", "write-key-kernel"])
def test_clip_mask_without_the_iterates_changes_no_gradient(monkeypatch, seg, source):
    """The backward's first kernel needs the iterates d̄ only for the clip's mask [d_min < d̄ < d_max] (E2). It can
    read that mask instead of recomputing the iterates from δ⁰ (C1): stored by the forward as int8
    (OSDN_DSCAN_CLIP_MASK=1; from the two-level carry's second pass or from the write-key kernel), or, for the
    default bounds d_min = 0, d_max = +∞, off the write keys K̃ = max(d̄, 0) ⊙ k (C2), which are 0 exactly where the
    clip cuts. Either way every gradient is bit for bit the one of the recomputing kernel (OSDN_DSCAN_CLIP_MASK=0,
    OSDN_DSCAN_MASK_FROM_W=0), with the clip cutting some coordinates and passing others; the int8 mask is the one
    of the forward's own iterates d̄ = d° + α (d_{t-1} − d°)."""
    import osdn_fast.ops.osdn.dscan_chunk as dc
    monkeypatch.setenv("OSDN_DSCAN_SEG", str(seg))
    clip = "active" if source == "int8" else "default"
    P = make_problem(np.random.default_rng(11), 170, 2, 5, [0, 5, 170], alpha="gates", clip=clip)
    if source == "write-keys":  # priors of both signs, so that max(d̄, 0) cuts some coordinates
        P["d_prior"] = np.random.default_rng(12).uniform(-1.0, 1.0, P["d_prior"].shape)
        P["d0"] = None
    P["beta"] = stable_beta(P)
    k, beta, alpha, eta, dp, d0, dw, ddT = (_t(P[n]) for n in ("k", "beta", "alpha", "eta", "d_prior", "d0", "dw",
                                                               "ddT"))
    cu_h = np.asarray(P["cu"])
    cu = torch.tensor(cu_h, dtype=torch.int32, device=DEVICE)
    lo, hi = float(P["d_min"]), float(P["d_max"])
    assert (dc.scan_segment_length(16, 2, cu_h) > 0) == (seg > 0)
    masks, real = [], dc.dscan_chunk_bwd_pre_kernel

    class Spy:  # records where each launch takes the mask from
        def __getitem__(self, grid):
            def launch(*args, **kw):
                masks.append(kw["MASK"])
                return real[grid](*args, **kw)
            return launch

    monkeypatch.setattr(dc, "dscan_chunk_bwd_pre_kernel", Spy())
    got = {}
    for on in ("1", "0"):
        monkeypatch.setenv("OSDN_DSCAN_CLIP_MASK", on if source == "int8" else "0")
        monkeypatch.setenv("OSDN_DSCAN_MASK_FROM_W", on)
        w, saved, _, dprev = dc.dscan_chunk_forward(k, beta, alpha, eta, dp, d0, cu, cu_h, lo, hi, 16, 4, "ieee",
                                                    store_dprev=True, for_backward=True)
        assert (saved["clipm"] is not None) == (on == "1" and source == "int8")
        dk, db = _t(P["dk"]), _t(P["dbeta"])
        outs = dc.dscan_chunk_backward(k, beta, alpha, eta, dp, saved, dw, ddT, cu, 2, lo, hi, 16, 4, "ieee", dk, db)
        got[on] = [x.cpu().numpy() for x in (dk, db, *outs)]
        a = P["alpha"][..., None]
        dbar = P["d_prior"][None, None] + a * (dprev.cpu().numpy().astype(np.float64) - P["d_prior"][None, None])
        inside = (dbar > lo) & (dbar < hi)
        assert 0.05 < inside.mean() < 0.95, f"the clip passes {inside.mean():.3f} of the coordinates"
        if on == "1" and source == "int8":
            stored = saved["clipm"].cpu().numpy() != 0
            assert (stored != inside).mean() < 1e-3  # float32 iterates against their float64 recombination here
    assert masks == [1 if source == "int8" else 2, 0]
    for name, x, y in zip(["dk", "dbeta", "dalpha", "deta", "ddp", "dd0"], got["1"], got["0"]):
        assert np.array_equal(x, y), f"{name} differs with the mask read ({source})"


def test_scan_chunk_and_map_blocks_follow_the_two_level_carry(monkeypatch):
    """Without env overrides: the two-level carry runs for bfloat16 with fewer than 64 (sequence, head) pairs and more
    than 2 · 64 chunks of 16 tokens, and there the scan chunk is 16 (2 warps) at any K; float16 keeps the serial carry
    and scan chunk 32 at K = 128; many pairs take 16 anyway. The segment maps compose all columns up to 128 a program
    (8 warps at 128), 32 columns beyond."""
    for name in ("OSDN_DSCAN_SEG", "OSDN_DSCAN_CHUNK", "OSDN_DSCAN_WARPS", "OSDN_DSCAN_MAP_BN", "OSDN_DSCAN_MAP_WARPS"):
        monkeypatch.delenv(name, raising=False)
    from osdn_fast.ops.osdn.dscan_chunk import _map_config
    plan = lambda NH, cu, dt: chunk_mod.dscan_plan(128, 64, NH, np.asarray(cu), dt)
    assert plan(16, [0, 32768], torch.bfloat16) == (16, 2, True)
    assert plan(16, [0, 32768], torch.float16) == (32, 4, False)
    assert plan(16, [0, 2048], torch.bfloat16) == (32, 4, False)  # 128 chunks of 16: not more than 2 · 64
    assert plan(128, np.arange(9) * 4096, torch.bfloat16) == (16, 2, False)  # 128 pairs: serial carries side by side
    assert _map_config(128, torch.bfloat16) == (128, 8, "tf32")
    assert _map_config(64, torch.float16) == (64, 4, "tf32x3")
    assert _map_config(256, torch.float32) == (32, 4, "ieee")


def test_segments_tile_the_chunks_of_every_sequence():
    from osdn_fast.ops.osdn.utils import chunk_indices, scan_segments
    cu = np.asarray([0, 0, 3, 160, 160, 170])
    cu_s, coff_s, ptr = scan_segments(cu, 16, 2)
    _, offs = chunk_indices(cu, 16)
    assert list(ptr) == [0, 1, 2, 7, 8, 9]  # every sequence has a segment; 157 tokens = 10 chunks = 5 segments
    for n in range(5):
        segs = range(ptr[n], ptr[n + 1])
        assert cu_s[segs[0]] == cu[n] and cu_s[segs[-1] + 1] == cu[n + 1]
        assert coff_s[segs[0]] == offs[n]
        for s in segs:
            assert (cu_s[s + 1] - cu_s[s]) <= 2 * 16 and (s == segs[-1] or (cu_s[s + 1] - cu_s[s]) == 32)
