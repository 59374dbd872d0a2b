"""The hypergradient feedback of a preconditioner (spec D3, E7, T2).

For token t, the OSGM feedback of a diagonal preconditioner d measures how much one
right-preconditioned gradient step on the inner loss ℓ_t(S) = ½‖S k_t − v_t‖² (D1) decreases it,
relative to the squared gradient norm. Because the residual cancels, it depends on d, k_t and β_t
alone (D3): h_t(d) = (ρ_t(d)² − 1) / (2‖k_t‖²), with ρ_t(d) = 1 − β_t⟨k_t², d⟩ (E7).

All functions broadcast over leading axes: d, k [..., K]; beta [...].
"""

from __future__ import annotations

import numpy as np

__all__ = ["contraction_factor", "feedback", "feedback_grad", "feedback_from_state", "inner_loss"]


def contraction_factor(d, k, beta):
    """ρ_t(d) = 1 − β_t ⟨k_t², d⟩ (E7).

    Parameters
    ----------
    d, k : [..., K];  beta : [...]

    Returns
    -------
    rho : [...]
    """
    d, k, beta = np.asarray(d, float), np.asarray(k, float), np.asarray(beta, float)
    return 1.0 - beta * np.sum(k * k * d, axis=-1)


def feedback(d, k, beta):
    """h_t(d) = (ρ_t(d)² − 1) / (2‖k_t‖²), the state-free feedback (D3, T2); 0 where k_t = 0.

    Parameters
    ----------
    d, k : [..., K];  beta : [...]

    Returns
    -------
    h : [...]
    """
    k = np.asarray(k, float)
    kn2 = np.sum(k * k, axis=-1)
    rho = contraction_factor(d, k, beta)
    return np.where(kn2 > 0, (rho ** 2 - 1.0) / (2.0 * np.where(kn2 > 0, kn2, 1.0)), 0.0)


def feedback_grad(d, k, beta):
    """∇_d h_t(d) = −ρ_t(d) β_t k_t² / ‖k_t‖² (D3); the step E8 is d − η ∇_d h_t(d). 0 where k_t = 0.

    Parameters
    ----------
    d, k : [..., K];  beta : [...]

    Returns
    -------
    grad : [..., K]
    """
    k, beta = np.asarray(k, float), np.asarray(beta, float)
    kn2 = np.sum(k * k, axis=-1)
    rho = contraction_factor(d, k, beta)
    coef = np.where(kn2 > 0, -rho * beta / np.where(kn2 > 0, kn2, 1.0), 0.0)
    return coef[..., None] * k * k


def inner_loss(h, k, v):
    """ℓ_t(S) = ½‖S k_t − v_t‖² (D1) for a state stored as h = Sᵀ.

    Parameters
    ----------
    h : [..., K, V];  k : [..., K];  v : [..., V]

    Returns
    -------
    loss : [...]
    """
    res = np.einsum("...kv,...k->...v", np.asarray(h, float), np.asarray(k, float)) - np.asarray(v, float)
    return 0.5 * np.sum(res * res, axis=-1)


def feedback_from_state(h, k, v, beta, d):
    """The feedback of D3 by its definition, from an actual state: T2's left-hand side.

    h_t(d) = [ℓ_t(S − β_t ∇ℓ_t(S) diag d) − ℓ_t(S)] / ‖∇ℓ_t(S)‖_F², with ∇ℓ_t(S) = −r kᵀ (D1) and
    S the state the token reads (γ_t S_{t-1} when gated).

    Parameters
    ----------
    h : [..., K, V]  state Sᵀ;  k, d : [..., K];  v : [..., V];  beta : [...]

    Returns
    -------
    h_t : [...]  NaN where the gradient vanishes (r = 0 or k = 0), where the ratio is undefined
    """
    h, k, v, d = (np.asarray(x, float) for x in (h, k, v, d))
    beta = np.asarray(beta, float)
    r = v - np.einsum("...kv,...k->...v", h, k)
    grad_h = -k[..., :, None] * r[..., None, :]  # ∇ℓ in the h = Sᵀ layout: (−r kᵀ)ᵀ
    stepped = h - beta[..., None, None] * d[..., :, None] * grad_h  # (S − β ∇ℓ diag d)ᵀ
    num = inner_loss(stepped, k, v) - inner_loss(h, k, v)
    den = np.sum(grad_h * grad_h, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
