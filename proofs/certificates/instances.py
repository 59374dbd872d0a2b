"""Hypothesis strategies for T4 and T5 instances, including adversarial ones at the assumptions' edges.

Kinds (drawn by Hypothesis, so shrinking moves between them):

* T4: ``random`` (any keys, zero keys, β ∈ [0, 2], η ∈ (0, 3]); ``eta_edge`` (η ∈ {1e-6, 2 − 1e-9, 10});
  ``collinear`` (keys within 1e-3..1e-7 of one direction, so the best fixed comparator of T4 is a nearly
  singular least-squares solution with a huge norm); ``at_comparator`` (the learner starts at a consistent
  comparator: regret and bound are both ~0).
* T5: ``random`` (unit keys, d* ∈ [1, 3]^K, η ∈ (0, 2)); ``eta_to_2`` (η = 2 − 10^-m); ``eta_to_0``;
  ``beta_to_1`` (d* within 10^-m of 1, so β_t → 1); ``one_hot`` (one-hot keys with β = 1: the bound
  is attained in the limit, the tightest case); ``revisits`` (a few keys revisited JRT-style);
  ``ill_conditioned`` (d* entries spread over [1, 1e6] and nearly collinear keys: a nearly singular
  comparator).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .inequalities import T4Instance, T5Instance, comparators_t4

__all__ = ["t4_instances", "t5_instances", "t5_short_key_instances", "T4_KINDS", "T5_KINDS"]

T4_KINDS = ("random", "eta_edge", "collinear", "at_comparator")
T5_KINDS = ("random", "eta_to_2", "eta_to_0", "beta_to_1", "one_hot", "revisits", "ill_conditioned")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@st.composite
def t4_instances(draw, kinds=T4_KINDS, max_T=24, max_K=5):
    kind = draw(st.sampled_from(kinds))
    T = draw(st.integers(1, max_T))
    K = draw(st.integers(1, max_K))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = rng.standard_normal((T, K)) * rng.uniform(0.2, 2.0, (T, 1))
    k[rng.uniform(size=T) < 0.1] = 0.0  # tokens with k = 0 (E8 skips them)
    beta = rng.uniform(0.0, 2.0, T)
    eta = float(rng.uniform(0.01, 3.0))
    d0 = rng.uniform(0.0, 2.0, K)
    if kind == "eta_edge":
        eta = draw(st.sampled_from([1e-6, 2.0 - 1e-9, 10.0]))
    elif kind == "collinear":
        eps = draw(st.sampled_from([1e-3, 1e-5, 1e-7]))
        base = _unit(rng.standard_normal(K))
        k = base + eps * rng.standard_normal((T, K))
        beta = rng.uniform(0.5, 1.0, T)
    elif kind == "at_comparator":
        d_star = rng.uniform(1.0, 2.0, K)
        k = _unit(rng.standard_normal((T, K)))
        beta = 1.0 / np.sum(k * k * d_star, -1)
        d0 = d_star
    comps = comparators_t4(k, beta, d0, rng)
    return T4Instance(k=k, beta=beta, eta=eta, d0=d0, comparators=comps, kind=kind)


@st.composite
def t5_instances(draw, kinds=T5_KINDS, max_T=40, max_K=5):
    kind = draw(st.sampled_from(kinds))
    T = draw(st.integers(1, max_T))
    K = draw(st.integers(1, max_K))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = rng.standard_normal((T, K))
    d_star = rng.uniform(1.0, 3.0, K)
    eta = float(rng.uniform(0.05, 1.95))
    d0 = rng.uniform(0.0, 4.0, K)
    if kind == "eta_to_2":
        eta = 2.0 - 10.0 ** -draw(st.integers(1, 12))
    elif kind == "eta_to_0":
        eta = 10.0 ** -draw(st.integers(1, 9))
    elif kind == "beta_to_1":
        d_star = 1.0 + 10.0 ** -draw(st.integers(3, 15)) * rng.uniform(0, 1, K)
    elif kind == "one_hot":
        k = np.eye(K)[rng.integers(0, K, T)] * rng.choice([-1.0, 1.0], (T, 1))
        d_star = np.ones(K)  # β_t = 1 exactly
        eta = float(draw(st.sampled_from([0.3, 1.0, 1.7, 1.99, 2.0 - 1e-6])))
    elif kind == "revisits":
        base = rng.standard_normal((draw(st.integers(1, 4)), K))
        k = base[np.arange(T) % len(base)]
    elif kind == "ill_conditioned":
        d_star = 10.0 ** rng.uniform(0, 6, K)
        k = rng.standard_normal(K) + 10.0 ** -draw(st.integers(2, 8)) * rng.standard_normal((T, K))
    return T5Instance(k=k, d_star=d_star, eta=eta, d0=d0, kind=kind)


@st.composite
def t5_short_key_instances(draw, max_T=40, max_K=5):
    """T5 beyond its stated unit-key assumption, where the proof still goes through (proofs/T5.md): keys
    with 0 < ‖k_t‖ ≤ 1, not normalised; a consistent d* scaled so that β_t = 1/⟨k_t², d*⟩ ≤ 1; η ∈ (0, 2)."""
    T = draw(st.integers(1, max_T))
    K = draw(st.integers(1, max_K))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    norms = rng.uniform(draw(st.sampled_from([1e-3, 0.2, 0.9])), 1.0, (T, 1))
    k = _unit(rng.standard_normal((T, K))) * norms
    d_star = rng.uniform(1.0, 3.0, K) / float(np.min(norms) ** 2)  # β_t = 1/⟨k_t², d*⟩ ≤ 1
    eta = float(draw(st.sampled_from([float(rng.uniform(0.05, 1.95)), 2.0 - 1e-9, 1e-6])))
    return T5Instance(k=k, d_star=d_star, eta=eta, d0=rng.uniform(0.0, 4.0, K) / float(np.min(norms) ** 2),
                      unit=False, kind="short_keys")
