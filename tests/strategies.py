"""Hypothesis strategies for OSDN problems (spec §1 shapes; every option of spec §6)."""

import numpy as np
from hypothesis import strategies as st

SEQ_ARGS = ("q", "k", "v", "beta", "g", "alpha")


@st.composite
def problems(draw, max_T=40, max_K=7, max_V=6, max_B=2, max_H=2, packed=None, unit_keys=False):
    """Draw a full keyword set for osdn_ref.recurrent_osdn: shapes (T = 1, odd K and V), gates,
    APF with hard resets, clip bounds active or not, initial states, l2norm, packed sequences."""
    B = draw(st.integers(1, max_B))
    T = draw(st.integers(1, max_T))
    H = draw(st.integers(1, max_H))
    K = draw(st.integers(1, max_K))
    V = draw(st.integers(1, max_V))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    is_packed = draw(st.booleans()) if packed is None else packed
    if is_packed:
        B = 1
    kw = dict(q=rng.standard_normal((B, T, H, K)), v=rng.standard_normal((B, T, H, V)),
              beta=rng.uniform(0.0, 1.0, (B, T, H)))
    k = rng.standard_normal((B, T, H, K))
    kw["k"] = k / np.linalg.norm(k, axis=-1, keepdims=True) * (1.0 if unit_keys else rng.uniform(0.3, 1.2, (B, T, H, 1)))
    if draw(st.booleans()):
        kw["g"] = -rng.uniform(0.0, 0.5, (B, T, H))
    if draw(st.booleans()):
        a = rng.uniform(0.3, 1.0, (B, T, H))
        a[rng.uniform(size=(B, T, H)) < 0.1] = 0.0  # hard resets
        kw["alpha"] = a
    kw["eta"] = draw(st.sampled_from(["scalar", "per_head"]))
    kw["eta"] = float(rng.uniform(0, 1.9)) if kw["eta"] == "scalar" else rng.uniform(0, 1.9, H)
    if draw(st.booleans()):
        kw["d_prior"] = rng.uniform(0.3, 1.7, (H, K))
    clip = draw(st.sampled_from(["default", "active", "none"]))
    if clip == "active":
        kw["d_min"], kw["d_max"] = 0.6, 1.3
    elif clip == "none":
        kw["d_min"], kw["d_max"] = -np.inf, None
    N = B
    if is_packed:
        n_seq = draw(st.integers(1, 4))
        cuts = sorted(draw(st.lists(st.integers(0, T), min_size=n_seq - 1, max_size=n_seq - 1)))
        kw["cu_seqlens"] = np.array([0] + cuts + [T], dtype=np.int64)
        N = n_seq
    if draw(st.booleans()):
        kw["initial_state"] = rng.standard_normal((N, H, K, V))
    if draw(st.booleans()):
        kw["initial_precond"] = rng.uniform(0.0, 2.0, (N, H, K))
    kw["use_qk_l2norm_in_kernel"] = draw(st.booleans())
    return kw
