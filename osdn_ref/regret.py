"""Regret of the preconditioner learner (spec T4) and its dynamic version under APF (spec §5).

The learner plays d̄_{t-1} and pays the feedback h_t(d̄_{t-1}) (D3). With α ≡ 1 and the clip
inactive, E8 is online gradient descent on the convex quadratics h_t, so for every comparator d
(T4):  Σ_t h_t(d̄_{t-1}) − Σ_t h_t(d) ≤ ‖d_0 − d‖² / (2η) + (η/2) Σ_t ‖∇h_t(d̄_{t-1})‖².

All functions take one head's stream: keys k [T, K], strengths beta [T], and the learner's points
d_bar [T, K] (``trace["d_bar"]`` of :func:`osdn_ref.recurrent_osdn` for one batch row and head).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .feedback import feedback, feedback_grad

__all__ = ["best_fixed_precond", "regret_bound", "dynamic_regret"]


def best_fixed_precond(k, beta, center: Optional[np.ndarray] = None) -> np.ndarray:
    """The best fixed preconditioner in hindsight for Σ_t h_t(d) (T4's strongest comparator).

    Σ_t h_t(d) = Σ_t (ρ_t(d)² − 1)/(2‖k_t‖²) is a weighted least-squares objective in d
    (E7: ρ_t(d) = 1 − ⟨β_t k_t², d⟩, weights 1/‖k_t‖²). Among its minimisers, return the one
    nearest ``center`` (default the origin: the minimum-norm solution), which is unique.

    Parameters
    ----------
    k : [T, K];  beta : [T];  center : [K], optional

    Returns
    -------
    d_star : [K]
    """
    k, beta = np.asarray(k, float), np.asarray(beta, float)
    K = k.shape[-1]
    c = np.zeros(K) if center is None else np.asarray(center, float)
    kn2 = np.sum(k * k, -1)
    live = kn2 > 0
    w = 1.0 / np.sqrt(kn2[live])
    A = (beta[live, None] * k[live] ** 2) * w[:, None]
    b = w - A @ c
    if A.shape[0] == 0:
        return c.copy()
    x, *_ = np.linalg.lstsq(A, b, rcond=None)
    return c + x


def regret_bound(k, beta, d_bar, d0, comparator, eta: float) -> Dict[str, float]:
    """Realised regret of the learner against ``comparator`` and its OGD bound (T4).

    Parameters
    ----------
    k : [T, K];  beta : [T];  d_bar : [T, K] the learner's points d̄_{t-1};  d0 : [K] its start;
    comparator : [K];  eta : float > 0

    Returns
    -------
    dict with ``regret`` = Σ h_t(d̄_{t-1}) − Σ h_t(d), ``bound`` = ‖d_0 − d‖²/(2η) +
    (η/2) Σ ‖∇h_t(d̄_{t-1})‖², and the two terms of the bound.
    """
    if not eta > 0:
        raise ValueError(f"eta: the regret bound T4 needs eta > 0, got {eta}")
    k, beta, d_bar = np.asarray(k, float), np.asarray(beta, float), np.asarray(d_bar, float)
    d = np.asarray(comparator, float)
    loss_learner = float(np.sum(feedback(d_bar, k, beta)))
    loss_comp = float(np.sum(feedback(np.broadcast_to(d, d_bar.shape), k, beta)))
    dist = float(np.sum((np.asarray(d0, float) - d) ** 2)) / (2.0 * eta)
    grads = float(np.sum(feedback_grad(d_bar, k, beta) ** 2)) * eta / 2.0
    return dict(regret=loss_learner - loss_comp, bound=dist + grads, distance_term=dist,
                gradient_term=grads, loss_learner=loss_learner, loss_comparator=loss_comp)


def dynamic_regret(k, beta, d_bar, window: int) -> Dict[str, object]:
    """Dynamic regret against per-window best comparators and their path length (spec §5, APF).

    The stream is cut into consecutive windows of ``window`` tokens; each gets its own best fixed
    preconditioner d*_w (:func:`best_fixed_precond`, T4's comparator on that window).

    Parameters
    ----------
    k : [T, K];  beta : [T];  d_bar : [T, K];  window : int ≥ 1

    Returns
    -------
    dict with ``dynamic_regret`` = Σ_t h_t(d̄_{t-1}) − Σ_w Σ_{t∈w} h_t(d*_w), ``path_length`` =
    Σ_w ‖d*_w − d*_{w−1}‖, and ``comparators`` [W, K].
    """
    if window < 1:
        raise ValueError(f"window: expected an integer >= 1, got {window}")
    k, beta, d_bar = np.asarray(k, float), np.asarray(beta, float), np.asarray(d_bar, float)
    T = k.shape[0]
    comps = []
    loss_comp = 0.0
    for s in range(0, T, window):
        sl = slice(s, min(s + window, T))
        d_w = best_fixed_precond(k[sl], beta[sl])
        comps.append(d_w)
        loss_comp += float(np.sum(feedback(np.broadcast_to(d_w, k[sl].shape), k[sl], beta[sl])))
    comps_arr = np.array(comps)
    path = float(np.sum(np.linalg.norm(np.diff(comps_arr, axis=0), axis=-1))) if len(comps) > 1 else 0.0
    return dict(dynamic_regret=float(np.sum(feedback(d_bar, k, beta))) - loss_comp,
                path_length=path, comparators=comps_arr)
