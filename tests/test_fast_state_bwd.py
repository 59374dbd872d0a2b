"""C3 reverse pass: the split state backward (serial dh walk + chunk-parallel gradient kernel, the default) and
the stored-operand variant (``OSDN_STATE_BWD=stored``: R and dR stored, key columns split over programs) give
the same gradients as the single fused kernel (``OSDN_STATE_BWD=fused``) and all equal the float64 reference
(T1), with and without log-decays, V split over several value blocks, K over several key blocks, packed
sequences, an initial state and a cotangent of the final state."""

import numpy as np
import pytest
import torch

import osdn_fast.ops.osdn.chunk as chunk_mod
from launches import spy_launches
from osdn_fast import chunk_osdn
from osdn_fast.compare import compare
from osdn_fast.tolerance import BACKEND, assert_within, realistic_problem

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _packed_problem(gated: bool, K: int, V: int, lens=(23, 0, 41)):
    """Three packed sequences (lengths 23, 0 and 41: a partial chunk, an empty sequence, several chunks),
    h0 and d0 given; the comparison also feeds cotangents of the final state and preconditioner."""
    lens = list(lens)
    T = sum(lens)
    kw = realistic_problem(B=1, T=T, H=2, K=K, V=V, seed=17 + gated, full=True)
    rng = np.random.default_rng(5)
    kw["initial_state"] = 0.1 * rng.standard_normal((len(lens), 2, K, V))
    kw["initial_precond"] = rng.uniform(0.2, 2.0, (len(lens), 2, K))
    kw["cu_seqlens"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    if not gated:
        del kw["g"]
    return kw


def _assert_agree(other, base, ref, names, tol, what):
    """Each of ``names`` of two fast-path runs agrees within ``tol``, scaled by max(1, max|reference|)."""
    for n in names:
        scale = max(1.0, float(np.max(np.abs(ref[n]))))
        diff = float(np.max(np.abs(other[n] - base[n]))) / scale
        assert diff <= tol, f"{n}: {what} differ by {diff:.3e} (scaled)"


def _run(monkeypatch, mode, kw, C):
    monkeypatch.setenv("OSDN_STATE_BWD", mode)
    return compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=C)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("K,V,C", [(67, 130, 16), (20, 70, 32)])
def test_split_and_stored_state_backward_equal_fused_and_reference(monkeypatch, gated, K, V, C):
    kw = _packed_problem(gated, K, V)
    BK = max(16, 1 << (K - 1).bit_length())
    assert chunk_mod._bv(BK, V) < V, "the problem must split V into several value blocks"
    errs_f, fused, ref = _run(monkeypatch, "fused", kw, C)
    assert_within(errs_f, torch.float32, BACKEND, what=f"chunk_osdn fused state bwd C={C}")
    for mode in ("split", "stored"):
        errs_s, other, _ = _run(monkeypatch, mode, kw, C)
        assert_within(errs_s, torch.float32, BACKEND, what=f"chunk_osdn {mode} state bwd C={C}")
        names = [n for n in ref if n.startswith("d") and n in other]
        assert {"dq", "dk", "dv", "dbeta", "dinitial_state"} <= set(names)
        assert ("dg" in names) == gated
        for n in names:
            a, b = other[n], fused[n]
            assert np.all(np.isfinite(a)), n
            scale = max(1.0, float(np.max(np.abs(ref[n]))))
            diff = float(np.max(np.abs(a - b))) / scale
            assert diff <= 1e-5, f"{n}: {mode} vs fused state backward differ by {diff:.3e} (scaled)"


@pytest.mark.parametrize("gated", [False, True])
def test_stored_state_backward_float16_within_bounds(monkeypatch, gated):
    """With 16-bit inputs the stored R and dR are rounded to float16 (as hbuf, dhbuf are): still within the
    float16 bounds against the float64 reference; K = 67 takes two key blocks."""
    kw = _packed_problem(gated, 67, 70)
    errs, _, _ = compare_mode(monkeypatch, "stored", kw, torch.float16)
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn stored state bwd, float16")


def compare_mode(monkeypatch, mode, kw, dtype, C=32):
    monkeypatch.setenv("OSDN_STATE_BWD", mode)
    return compare(chunk_osdn, kw, dtype, DEVICE, chunk_size=C)


def test_unknown_state_backward_mode_is_refused(monkeypatch):
    monkeypatch.setenv("OSDN_STATE_BWD", "recompute")
    kw = realistic_problem(B=1, T=5, H=1, K=4, V=4, seed=0, full=False)
    with pytest.raises(ValueError, match="OSDN_STATE_BWD"):
        compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)


def test_stored_state_backward_is_the_default(monkeypatch):
    """Without OSDN_STATE_BWD the serial dh walk and the stored-operand gradient kernel run, and neither the fused
    kernel nor the recomputing gradient kernel does."""
    monkeypatch.delenv("OSDN_STATE_BWD", raising=False)
    launched = spy_launches(monkeypatch, chunk_mod, ["state_bwd_kernel", "state_bwd_dh_kernel", "state_bwd_dh_tiles_kernel",
                                           "state_bwd_grads_kernel", "state_bwd_grads_stored_kernel"])
    kw = realistic_problem(B=1, T=20, H=1, K=8, V=8, seed=2, full=True)
    compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    assert launched == ["state_bwd_dh_tiles_kernel", "state_bwd_grads_stored_kernel"]


@pytest.mark.parametrize("gated,K,V,dh0", [(False, 67, 130, True), (True, 200, 24, False), (False, 20, 70, True)])
def test_tiled_dh_walk_equals_the_full_walk(monkeypatch, gated, K, V, dh0):
    """The default dh walk (``state_bwd_dh_tiles_kernel``: dh as key tiles of <= 64 rows, two products on its chain)
    gives the full walk's gradients (``OSDN_DH_WALK=full``: every product inside the walk), float32 within 1e-6
    (scaled): one, two and four key tiles (K = 20, 67, 200), V over several value blocks, packed sequences with an
    empty one, with and without a cotangent of the final state (dh0 feeds dinitial_state either way)."""
    kw = _packed_problem(gated, K, V)
    if not dh0:
        del kw["initial_state"]
    monkeypatch.setenv("OSDN_DH_WALK", "full")
    _, full, ref = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    monkeypatch.setenv("OSDN_DH_WALK", "tiles")
    errs, tiles, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    assert_within(errs, torch.float32, BACKEND, what="chunk_osdn tiled dh walk")
    names = [n for n in full if n.startswith("d") and n in tiles]
    assert {"dq", "dk", "dv", "dbeta"} <= set(names) and (("dinitial_state" in names) == dh0)
    _assert_agree(tiles, full, ref, names, 1e-6, "tiled vs full dh walk")


def test_dh_walk_follows_the_number_of_sequence_head_pairs(monkeypatch):
    """Without OSDN_DH_WALK the tiled walk runs for fewer than 64 (sequence, head) pairs and the full walk from 64 on."""
    monkeypatch.delenv("OSDN_DH_WALK", raising=False)
    monkeypatch.delenv("OSDN_STATE_WALK", raising=False)
    assert chunk_mod._dh_walk_mode(False, 63) == "tiles"
    assert chunk_mod._dh_walk_mode(False, 64) == "full"
    assert chunk_mod._dh_walk_mode(True, 512) == "tiles"
    monkeypatch.setenv("OSDN_DH_WALK", "full")
    assert chunk_mod._dh_walk_mode(False, 1) == "full"


def test_unknown_dh_walk_is_refused(monkeypatch):
    monkeypatch.setenv("OSDN_DH_WALK", "halves")
    kw = realistic_problem(B=1, T=5, H=1, K=4, V=4, seed=0, full=False)
    with pytest.raises(ValueError, match="OSDN_DH_WALK"):
        compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)


@pytest.mark.parametrize("gated,mode", [(False, "stored"), (True, "split")])  # an A/B switch: one gated, one not
def test_lean_state_walks_equal_the_full_walks(monkeypatch, gated, mode):
    """OSDN_STATE_WALK=lean (the forward walk without the output, ``state_out_kernel`` forming it for all chunks;
    the tiled dh walk reading Mᵀ scale Sᵀ dO from ``state_bwd_dul_kernel``) gives the full walks' outputs, final state and
    every gradient: float32 within 1e-6 (scaled), K and V over several blocks, packed sequences with an empty one."""
    kw = _packed_problem(gated, 67, 130)
    monkeypatch.setenv("OSDN_STATE_BWD", mode)
    monkeypatch.setenv("OSDN_STATE_WALK", "full")
    monkeypatch.setenv("OSDN_DH_WALK", "full")
    _, full, ref = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    monkeypatch.setenv("OSDN_STATE_WALK", "lean")
    monkeypatch.delenv("OSDN_DH_WALK")
    errs, lean, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    assert_within(errs, torch.float32, BACKEND, what=f"chunk_osdn lean walks ({mode} state bwd)")
    names = [n for n in full if n in lean]
    assert {"o", "final_state", "dq", "dk", "dv", "dbeta", "dinitial_state"} <= set(names)
    _assert_agree(lean, full, ref, names, 1e-6, "lean vs full walks")


def test_lean_state_walks_float16_within_bounds(monkeypatch):
    """With 16-bit inputs the lean walks round U and scale Sᵀ dO to float16 between kernels: within the float16
    bounds against the float64 reference."""
    monkeypatch.setenv("OSDN_STATE_WALK", "lean")
    errs, _, _ = compare_mode(monkeypatch, "stored", _packed_problem(True, 67, 70), torch.float16)
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn lean walks, float16")


def test_full_walks_float16_within_bounds(monkeypatch):
    """The walks that run from 64 (sequence, head) pairs on (every product of C3 inside the forward walk and inside
    the dh walk), forced at a small problem with 16-bit inputs: within the float16 bounds against the float64
    reference (the default walks at these shapes are the two-product and the tiled one)."""
    monkeypatch.setenv("OSDN_STATE_WALK", "full")
    monkeypatch.setenv("OSDN_DH_WALK", "full")
    launched = spy_launches(monkeypatch, chunk_mod, ["state_fwd_kernel", "state_fwd_wu_kernel", "state_bwd_dh_kernel",
                                           "state_bwd_dh_tiles_kernel"])
    errs, _, _ = compare_mode(monkeypatch, "stored", _packed_problem(True, 67, 70), torch.float16)
    assert set(launched) == {"state_fwd_kernel", "state_bwd_dh_kernel"}, launched
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn full walks, float16")


def test_unknown_state_walk_is_refused(monkeypatch):
    monkeypatch.setenv("OSDN_STATE_WALK", "skinny")
    kw = realistic_problem(B=1, T=5, H=1, K=4, V=4, seed=0, full=False)
    with pytest.raises(ValueError, match="OSDN_STATE_WALK"):
        compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)


@pytest.mark.parametrize("gated,mode,K,V,bko", [(False, "stored", 20, 70, None), (True, "stored", 20, 70, None),
                                                 (True, "stored", 67, 130, 128), (True, "split", 67, 130, None)])
def test_two_product_walk_equals_the_full_walk(monkeypatch, gated, mode, K, V, bko):
    """OSDN_STATE_WALK=wu (W = M diag(βe^λ) K and u = M diag(β) V for all chunks, the walk's step U = u − W h⁰ and
    h ← e^{λn} h⁰ + (diag(e^{λn−λ}) K̃)ᵀ U, the output for all chunks at once; the stored backward forming R from U, K
    and h⁰) gives the full walk's outputs, final state and every gradient: float32 within 1e-5 (scaled), K and V over
    several blocks, packed sequences with an empty one, with the stored and the split state backward."""
    kw = _packed_problem(gated, K, V)
    monkeypatch.setenv("OSDN_STATE_BWD", mode)
    if bko:
        monkeypatch.setenv("OSDN_BWD_GRAD_BKO", str(bko))
    monkeypatch.setenv("OSDN_STATE_WALK", "full")
    _, full, ref = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    monkeypatch.setenv("OSDN_STATE_WALK", "wu")
    launched = spy_launches(monkeypatch, chunk_mod, ["state_fwd_kernel", "state_fwd_wu_kernel"])
    errs, wu, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    assert set(launched) == {"state_fwd_wu_kernel"}, launched
    assert_within(errs, torch.float32, BACKEND, what=f"chunk_osdn two-product walk ({mode} state bwd)")
    names = [n for n in full if n in wu]
    assert {"o", "final_state", "dq", "dk", "dv", "dbeta", "dinitial_state"} <= set(names)
    _assert_agree(wu, full, ref, names, 1e-5, "two-product vs full walk")


@pytest.mark.parametrize("gated", [False, True])
def test_two_product_walk_is_the_float16_default_and_within_bounds(monkeypatch, gated):
    """For 16-bit inputs and few (sequence, head) pairs the two-product walk runs by default (u, W and U rounded to
    float16 between kernels, R formed from U in the gradient kernel): within the float16 bounds against the float64
    reference, K = 67 and V = 70 (padded blocks)."""
    for name in ("OSDN_STATE_WALK", "OSDN_STATE_BWD", "OSDN_BWD_GRAD_BKO"):
        monkeypatch.delenv(name, raising=False)
    launched = spy_launches(monkeypatch, chunk_mod, ["state_fwd_kernel", "state_fwd_wu_kernel", "state_wu_kernel",
                                           "state_out_kernel"])
    errs, _, _ = compare(chunk_osdn, _packed_problem(gated, 67, 70), torch.float16, DEVICE, chunk_size=32)
    assert launched[:3] == ["state_wu_kernel", "state_fwd_wu_kernel", "state_out_kernel"], launched
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn two-product walk, float16")


def test_state_walk_follows_the_pairs_and_the_gradient_key_block(monkeypatch):
    """Without OSDN_STATE_WALK the two-product walk runs for fewer than 64 (sequence, head) pairs where the stored
    backward can form R from U in one key block, and the full walk otherwise; a requested ``wu`` yields to ``full``
    where it cannot (float32 at K = 67: 64-column key blocks)."""
    monkeypatch.delenv("OSDN_STATE_WALK", raising=False)
    assert chunk_mod._state_walk_mode(True, 63) == "wu"
    assert chunk_mod._state_walk_mode(True, 64) == "full"
    assert chunk_mod._state_walk_mode(False, 1) == "full"
    monkeypatch.setenv("OSDN_STATE_WALK", "wu")
    assert chunk_mod._state_walk_mode(True, 512) == "wu"
    assert chunk_mod._state_walk_mode(False, 1) == "full"
    monkeypatch.delenv("OSDN_STATE_WALK")
    monkeypatch.delenv("OSDN_STATE_BWD", raising=False)
    monkeypatch.delenv("OSDN_BWD_GRAD_BKO", raising=False)
    launched = spy_launches(monkeypatch, chunk_mod, ["state_fwd_kernel", "state_fwd_wu_kernel"])
    compare(chunk_osdn, _packed_problem(False, 67, 70), torch.float32, DEVICE, chunk_size=32)
    assert set(launched) == {"state_fwd_kernel"}, launched


@pytest.mark.parametrize("gated,K,V,seg,dh_maps", [(True, 20, 70, 1, "forward"), (False, 67, 70, 2, "forward"),
                                                    (True, 67, 70, 2, "own")])
def test_two_level_walks_equal_the_plain_walks(monkeypatch, gated, K, V, seg, dh_maps):
    """The two-level state walks (OSDN_WALK_SEG: segments of ``seg`` chunks; every segment's offset and composed map
    Φ_s walked in parallel, the segments chained by x ← Φ_s x + b_s, every segment walked again from its start state)
    give the plain walks' outputs, final state and every gradient, float32 within 1e-5 (scaled): packed sequences of
    2, 0 and 3 chunks (segments of 1) or 2, 0 and 5 (of 2: one sequence in one segment, the other in three, the last
    one short), an empty one, an initial state and a cotangent of the final state, V over several value blocks and K
    over two key tiles of the dh walk (K = 67). The dh walk's segment maps are the forward's transposed (the default:
    its segment pass launches the value blocks only) or its own (OSDN_WALK_DH_MAPS=own: value and key blocks)."""
    kw = _packed_problem(gated, K, V, lens=(23, 0, 41) if seg == 1 else (23, 0, 73))
    monkeypatch.setenv("OSDN_STATE_WALK", "wu")
    monkeypatch.setenv("OSDN_STATE_BWD", "split")  # the two-product walk at K = 67 in float32 (its R comes from U)
    monkeypatch.setenv("OSDN_WALK_SEG", "0")
    _, plain, ref = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    monkeypatch.setenv("OSDN_WALK_SEG", str(seg))
    monkeypatch.setenv("OSDN_WALK_DH_MAPS", dh_maps)
    grids = []
    launched = spy_launches(monkeypatch, chunk_mod, ["state_seg_carry_kernel", "state_bwd_dh_tiles_kernel"], grids)
    errs, two, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    # the forward's and the dh walk's serial level; the dh walk's segment pass, then its plain pass
    assert launched == ["state_seg_carry_kernel", "state_bwd_dh_tiles_kernel", "state_seg_carry_kernel",
                        "state_bwd_dh_tiles_kernel"], launched
    value_blocks = grids[3][1][0]
    assert (grids[1][1][0] > value_blocks) == (dh_maps == "own"), grids
    assert_within(errs, torch.float32, BACKEND, what=f"chunk_osdn two-level walks, segments of {seg}")
    names = [n for n in plain if n in two]
    assert {"o", "final_state", "dq", "dk", "dv", "dbeta", "dinitial_state"} <= set(names)
    _assert_agree(two, plain, ref, names, 1e-5, "two-level vs plain walks")


def test_two_level_walks_follow_the_card_and_the_sequence_length(monkeypatch):
    """Without OSDN_WALK_SEG the walks run two-level (segments of 64 chunks) only where the plain walk's programs fill
    less than a third of the card, K <= 128 and some sequence has more than 128 chunks; OSDN_WALK_SEG sets the length
    for any problem."""
    monkeypatch.delenv("OSDN_WALK_SEG", raising=False)
    one = np.array([0, 32768])
    assert chunk_mod.walk_segment_length(32, one, 64, 128, 132) == 64     # (1, 32768, 16, 128), bf16
    assert chunk_mod.walk_segment_length(64, one, 64, 128, 132) == 0      # twice the programs
    assert chunk_mod.walk_segment_length(32, one, 64, 256, 132) == 0      # K > 128
    assert chunk_mod.walk_segment_length(32, np.array([0, 8192]), 64, 128, 132) == 0   # 128 chunks
    assert chunk_mod.walk_segment_length(32, np.array([0, 100, 8293]), 64, 128, 132) == 64  # one long enough
    monkeypatch.setenv("OSDN_WALK_SEG", "2")
    assert chunk_mod.walk_segment_length(512, np.array([0, 320]), 64, 128, 132) == 2
    assert chunk_mod.walk_segment_length(512, np.array([0, 256]), 64, 128, 132) == 0   # 4 chunks: one segment would do
    monkeypatch.setenv("OSDN_WALK_SEG", "0")
    assert chunk_mod.walk_segment_length(1, one, 64, 128, 132) == 0


def test_two_level_walks_float16_within_bounds(monkeypatch):
    """Forced in float16 (W, u, U, P and dR rounded to float16 between kernels as in the plain walks; the maps and the
    carries in float32): within the float16 bounds against the float64 reference."""
    for name in ("OSDN_STATE_WALK", "OSDN_STATE_BWD", "OSDN_BWD_GRAD_BKO", "OSDN_DH_WALK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSDN_WALK_SEG", "1")
    launched = spy_launches(monkeypatch, chunk_mod, ["state_seg_carry_kernel"])
    errs, _, _ = compare(chunk_osdn, _packed_problem(True, 67, 70), torch.float16, DEVICE, chunk_size=16)
    assert len(launched) == 2, launched
    assert_within(errs, torch.float16, BACKEND, what="chunk_osdn two-level walks, float16")


@pytest.mark.parametrize("gated", [False, True])
def test_full_dh_walk_float16_within_bounds(monkeypatch, gated):
    """The full dh walk (``state_bwd_dh_kernel``, the default from 64 (sequence, head) pairs on) forced in float16,
    where its step scales the rows of dO and dR (by e^λ, β e^λ) before rounding them to the dot's dtype instead of
    the rows of Q and K: within the float16 bounds against the float64 reference, gated and not, K and V over several
    blocks, packed sequences with an empty one."""
    monkeypatch.setenv("OSDN_DH_WALK", "full")
    launched = spy_launches(monkeypatch, chunk_mod, ["state_bwd_dh_kernel"])
    errs, _, _ = compare(chunk_osdn, _packed_problem(gated, 67, 70), torch.float16, DEVICE, chunk_size=16)
    assert launched, "the full dh walk did not run"
    assert_within(errs, torch.float16, BACKEND, what=f"chunk_osdn full dh walk, float16, gated={gated}")


@pytest.mark.parametrize("gated", [False, True])
def test_loads_issued_first_change_nothing(monkeypatch, gated):
    """The LOADS_FIRST forms (every tile a kernel reads issued before its first product: the output kernel after the
    two-product walk, the dul kernel and the plain tiled dh walk of C3 reversed; OSDN_OUT_LOADS_FIRST,
    OSDN_DUL_LOADS_FIRST, OSDN_DH_LOADS_FIRST) only move loads: every output and gradient is bit for bit the one of
    the loads-later forms, K and V over several blocks, packed sequences with an empty one."""
    kw = _packed_problem(gated, 67, 130)
    monkeypatch.setenv("OSDN_STATE_WALK", "wu")
    monkeypatch.setenv("OSDN_BWD_GRAD_BKO", "128")  # float32: one key block, so that the two-product walk may run
    monkeypatch.setenv("OSDN_DH_WALK", "tiles")
    monkeypatch.setenv("OSDN_WALK_SEG", "0")
    switches = ("OSDN_OUT_LOADS_FIRST", "OSDN_DUL_LOADS_FIRST", "OSDN_DH_LOADS_FIRST")
    for name in switches:
        monkeypatch.setenv(name, "0")
    _, base, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    for name in switches:
        monkeypatch.setenv(name, "1")
    launched = spy_launches(monkeypatch, chunk_mod, ["state_out_kernel", "state_bwd_dul_kernel",
                                                     "state_bwd_dh_tiles_kernel"])
    _, first, _ = compare(chunk_osdn, kw, torch.float32, DEVICE, chunk_size=16)
    assert set(launched) == {"state_out_kernel", "state_bwd_dul_kernel", "state_bwd_dh_tiles_kernel"}, launched
    assert set(first) == set(base)
    for n in base:
        np.testing.assert_array_equal(first[n], base[n], err_msg=n)
