"""Token-local contraction (spec D5, T3), the right-Newton comparator and super-geometric
contraction (spec T5).

D5/T3: after the write E5, the residual of the token just written is v_t − S_t k_t = ρ_t(p_t) r_t.
T5: with α ≡ 1, clip inactive, unit keys, β ≤ 1, 0 < η < 2 and a comparator d* with
β_t⟨k_t², d*⟩ = 1 for all t, the learner's factors satisfy Σ_t ρ_t(d̄_{t-1})² ≤ ‖d_0 − d*‖²/(η(2 − η)).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .feedback import contraction_factor
from .inputs import prepare, segments
from .recurrent import osdn_step

__all__ = [
    "contraction_identity_gap",
    "right_newton_write",
    "right_newton_comparator",
    "contraction_sum_bound",
    "consistent_stream",
]


def contraction_identity_gap(q, k, v, beta, **kwargs) -> np.ndarray:
    """Per-token gap of the contraction identity (D5, T3) along an actual run of E1–E8.

    At every token, compares v_t − S_t k_t (from the state after the write E5) with ρ_t(p_t) r_t
    (E7 at the played point E2, times the pre-write residual E4).

    Parameters
    ----------
    q, k, v, beta, **kwargs
        As for :func:`osdn_ref.recurrent_osdn` (no ``return_trace``).

    Returns
    -------
    gap : [B, T, H]  max_j |(v_t − S_t k_t)_j − ρ_t(p_t) r_{t,j}| / max(1, ‖r_t‖_∞)
    """
    kwargs.pop("output_final_state", None)
    p = prepare(q, k, v, beta, **kwargs)
    B, T, H = p.dims.B, p.dims.T, p.dims.H
    gap = np.empty((B, T, H))
    for n, b, t0, t1 in segments(p):
        h, d = p.h0[n:n + 1], p.d0[n:n + 1]
        for t in range(t0, t1):
            sl = slice(b, b + 1)
            gamma = np.exp(p.g[sl, t])[..., None]
            r = p.v[sl, t] - gamma * np.einsum("...kv,...k->...v", h, p.k[sl, t])  # E4
            h, d, _, tr = osdn_step(h, d, p.q[sl, t], p.k[sl, t], p.v[sl, t], p.beta[sl, t],
                                    p.g[sl, t], p.alpha[sl, t], p.eta[None], p.d_prior[None],
                                    p.scale, p.d_min, p.d_max)
            post = p.v[sl, t] - np.einsum("...kv,...k->...v", h, p.k[sl, t])
            pred = tr["rho_played"][..., None] * r
            gap[b, t] = (np.max(np.abs(post - pred), -1) / np.maximum(1.0, np.max(np.abs(r), -1)))[0]
    return gap


def right_newton_write(h, k, v):
    """The right-Newton step for ℓ_t (D5): S ← S − ∇ℓ_t(S) (k_t k_tᵀ)^†, in the h = Sᵀ layout.

    Since (k kᵀ)^† k = k/‖k‖², this is h + k rᵀ/‖k‖² with r = v − S k; it fits token t exactly.

    Parameters
    ----------
    h : [..., K, V];  k : [..., K];  v : [..., V]

    Returns
    -------
    h_new : [..., K, V]
    """
    h, k, v = (np.asarray(x, float) for x in (h, k, v))
    r = v - np.einsum("...kv,...k->...v", h, k)
    pinv_k = np.einsum("...ij,...j->...i", np.linalg.pinv(k[..., :, None] * k[..., None, :]), k)
    return h + pinv_k[..., :, None] * r[..., None, :]


def right_newton_comparator(k, beta) -> Dict[str, np.ndarray]:
    """The right-Newton comparator d* of D5/T5: β_t⟨k_t², d*⟩ = 1 for every token.

    Solved by least squares (minimum norm); ``consistency`` = max_t |β_t⟨k_t², d*⟩ − 1| says
    whether such a d* exists (0 up to rounding) for the stream.

    Parameters
    ----------
    k : [T, K];  beta : [T]

    Returns
    -------
    dict with ``d_star`` [K] and ``consistency`` (float)
    """
    k, beta = np.asarray(k, float), np.asarray(beta, float)
    A = beta[:, None] * k * k
    d_star, *_ = np.linalg.lstsq(A, np.ones(len(beta)), rcond=None)
    return dict(d_star=d_star, consistency=float(np.max(np.abs(A @ d_star - 1.0))) if len(beta) else 0.0)


def contraction_sum_bound(k, beta, d_bar, d0, d_star, eta: float, atol: float = 1e-12) -> Dict[str, float]:
    """Σ_t ρ_t(d̄_{t-1})² and its bound ‖d_0 − d*‖²/(η(2 − η)) (T5).

    The assumptions of T5 are checked and a ValueError names the one that fails: unit keys,
    β ≤ 1, 0 < η < 2, and d* consistent (β_t⟨k_t², d*⟩ = 1 within ``atol``). The caller must also
    have run with α ≡ 1 and the clip inactive, which this function cannot see.

    Parameters
    ----------
    k : [T, K];  beta : [T];  d_bar : [T, K] learner points;  d0 : [K];  d_star : [K];  eta : float

    Returns
    -------
    dict with ``sum_rho2``, ``bound`` and ``rho`` ([T], the learner's factors)
    """
    k, beta, d_bar = np.asarray(k, float), np.asarray(beta, float), np.asarray(d_bar, float)
    if not 0 < eta < 2:
        raise ValueError(f"eta: T5 needs 0 < eta < 2, got {eta}")
    if np.any(beta > 1) or np.any(beta < 0):
        raise ValueError(f"beta: T5 needs 0 <= beta <= 1, got range [{beta.min()}, {beta.max()}]")
    norms = np.linalg.norm(k, axis=-1)
    if np.max(np.abs(norms - 1.0)) > 1e-9:
        raise ValueError(f"k: T5 needs unit keys, got norms in [{norms.min()}, {norms.max()}]")
    cons = np.max(np.abs(contraction_factor(d_star, k, beta)))
    if cons > atol:
        raise ValueError(f"d_star: T5 needs beta_t <k_t^2, d*> = 1 for all t, off by {cons}")
    rho = contraction_factor(d_bar, k, beta)
    bound = float(np.sum((np.asarray(d0, float) - d_star) ** 2) / (eta * (2.0 - eta)))
    return dict(sum_rho2=float(np.sum(rho ** 2)), bound=bound, rho=rho)


def consistent_stream(rng: np.random.Generator, T: int, K: int, n_keys: int = 0, d_star_range=(1.0, 3.0)):
    """A stream on which T5's assumptions hold: unit keys, β_t = 1/⟨k_t², d*⟩ ≤ 1 for a fixed d*.

    With unit keys ⟨k², d*⟩ is a convex combination of the entries of d*, so entries ≥ 1 give β ≤ 1.

    Parameters
    ----------
    rng : numpy Generator;  T, K : int
    n_keys : int
        If > 0, tokens cycle through this many distinct keys (JRT-style revisits), else fresh keys.
    d_star_range : (float, float)
        Range of the comparator's entries (≥ 1).

    Returns
    -------
    k : [T, K], beta : [T], d_star : [K]
    """
    d_star = rng.uniform(*d_star_range, size=K)
    base = rng.standard_normal((n_keys if n_keys > 0 else T, K))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    k = base[np.arange(T) % len(base)]
    beta = 1.0 / np.sum(k * k * d_star, -1)
    return k, beta, d_star
