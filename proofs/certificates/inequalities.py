"""50-digit checks of the inequalities T4 (regret) and T5 (super-geometric contraction).

The identities behind both statements are proved symbolically in :mod:`proofs.certificates.identities`;
this module checks the *inequalities themselves* on concrete instances, with every quantity computed in
mpmath at ``DPS`` = 50 decimal digits, so that a margin is never an artefact of float64 rounding. The
inputs are read as exact binary64 numbers; derived quantities that an assumption constrains (unit keys,
β_t = 1/⟨k_t², d*⟩) are formed at 50 digits, so the assumptions hold to ~1e-50.

Both statements are about the learner alone (D4): with α ≡ 1 the learner's point is d̄_{t-1} = d_{t-1}, and
the clip (E2) changes only the played point, never the learner, so "clip inactive" makes the played point
equal the learner's point; the sums below are over the learner's points.

Every check returns a :class:`Margin`: ``margin = bound − value`` (≥ 0 when the statement holds) and
``rel = margin / max(|bound|, tiny)``. ``holds`` allows a rounding slack of 1e-40 relative to the size of
the terms, far below any float64 effect and far above 50-digit rounding.

Altered statements (``T4_ALTERED``, ``T5_ALTERED``) change the bound or drop an assumption; the tests
show that each is violated on some instance, so these checks can fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import mpmath
import numpy as np

__all__ = ["DPS", "Margin", "T4Instance", "T5Instance", "learner_mp", "check_t4", "check_t5",
           "T4_ALTERED", "T5_ALTERED", "comparators_t4", "summarize", "degenerate",
           "t5_assumptions"]

DPS = 50
SLACK = mpmath.mpf(10) ** -40


@dataclass
class Margin:
    """One checked inequality ``value ≤ bound``."""

    statement: str
    value: float
    bound: float
    margin: float
    rel: float
    holds: bool
    label: str = ""
    meta: Dict[str, object] = field(default_factory=dict)


@dataclass
class T4Instance:
    """A stream for T4: keys k [T, K] (any norm, zero rows allowed), strengths beta [T] ≥ 0,
    hyper step eta > 0, start d0 [K], and named comparators (each [K])."""

    k: np.ndarray
    beta: np.ndarray
    eta: float
    d0: np.ndarray
    comparators: Dict[str, np.ndarray]
    kind: str = "random"


@dataclass
class T5Instance:
    """A stream for T5: raw keys k [T, K] (normalised at 50 digits unless ``unit=False``), a comparator
    d_star [K] with entries ≥ 1 (then β_t = 1/⟨k_t², d*⟩ ≤ 1 is consistent by construction),
    eta in (0, 2), start d0 [K]. ``beta_scale`` ≠ 1 and ``unit=False`` exist only to build the
    assumption-dropping alterations."""

    k: np.ndarray
    d_star: np.ndarray
    eta: float
    d0: np.ndarray
    unit: bool = True
    beta_scale: float = 1.0
    kind: str = "random"


def _mp(x) -> List[mpmath.mpf]:
    return [mpmath.mpf(float(a)) for a in np.ravel(x)]


def learner_mp(k: List[List[mpmath.mpf]], beta: List[mpmath.mpf], eta, d0: List[mpmath.mpf]):
    """The learner of E1/E8 with α ≡ 1 at the working precision: returns its points d̄_0..d̄_{T-1}
    (the point used at token t is d̄_{t-1}) and the final d_T. Tokens with k = 0 leave it unchanged."""
    d = list(d0)
    points = []
    for kt, bt in zip(k, beta):
        points.append(list(d))
        kn2 = mpmath.fsum(x * x for x in kt)
        if kn2 == 0:
            continue
        rho = 1 - bt * mpmath.fsum(x * x * y for x, y in zip(kt, d))  # E7
        d = [y + eta * rho * bt * x * x / kn2 for x, y in zip(kt, d)]  # E8
    return points, d


def _h(d, kt, bt):
    """h_t(d) = (ρ_t(d)² − 1)/(2‖k_t‖²) (D3), 0 where k_t = 0."""
    kn2 = mpmath.fsum(x * x for x in kt)
    if kn2 == 0:
        return mpmath.mpf(0)
    rho = 1 - bt * mpmath.fsum(x * x * y for x, y in zip(kt, d))
    return (rho * rho - 1) / (2 * kn2)


def _grad2(d, kt, bt):
    """‖∇h_t(d)‖² with ∇h_t(d) = −ρ_t(d) β_t k_t² / ‖k_t‖² (D3)."""
    kn2 = mpmath.fsum(x * x for x in kt)
    if kn2 == 0:
        return mpmath.mpf(0)
    rho = 1 - bt * mpmath.fsum(x * x * y for x, y in zip(kt, d))
    return mpmath.fsum((rho * bt * x * x / kn2) ** 2 for x in kt)


def _margin(statement, value, bound, scale, label, meta) -> Margin:
    m = bound - value
    tiny = mpmath.mpf(10) ** -300
    rel = m / max(abs(bound), tiny)
    return Margin(statement, float(value), float(bound), float(m), float(rel),
                  bool(m >= -SLACK * max(mpmath.mpf(1), scale)), label, meta)


def _t4_terms(inst: T4Instance, comparator: np.ndarray):
    k = [_mp(row) for row in inst.k]
    beta = _mp(inst.beta)
    eta = mpmath.mpf(float(inst.eta))
    d0 = _mp(inst.d0)
    z = _mp(comparator)
    pts, _ = learner_mp(k, beta, eta, d0)
    loss_l = mpmath.fsum(_h(p, kt, bt) for p, kt, bt in zip(pts, k, beta))
    loss_c = mpmath.fsum(_h(z, kt, bt) for kt, bt in zip(k, beta))
    dist = mpmath.fsum((a - b) ** 2 for a, b in zip(d0, z)) / (2 * eta)
    grads = eta / 2 * mpmath.fsum(_grad2(p, kt, bt) for p, kt, bt in zip(pts, k, beta))
    scale = max(abs(loss_l), abs(loss_c), dist, grads)
    return loss_l - loss_c, dist, grads, eta, scale


# T4 and its alterations: name -> bound as a function of (distance term, gradient term, eta)
T4_BOUNDS: Dict[str, Callable] = {
    "T4": lambda dist, grads, eta: dist + grads,
}
T4_ALTERED: Dict[str, Callable] = {
    # drop the (η/2) Σ ‖∇h‖² term: the price of playing before seeing the loss
    "T4 without the gradient term": lambda dist, grads, eta: dist,
    # halve the distance term: ‖d_0 − d‖²/(4η)
    "T4 with ‖d_0 − d‖²/(4η)": lambda dist, grads, eta: dist / 2 + grads,
    # a quarter of the gradient term: (η/8) Σ ‖∇h‖²
    "T4 with (η/8) Σ‖∇h‖²": lambda dist, grads, eta: dist + grads / 4,
}


def check_t4(inst: T4Instance, bound_name: str = "T4") -> List[Margin]:
    """Regret ≤ bound (T4, or an alteration from ``T4_ALTERED``) for every comparator of the instance."""
    fn = T4_BOUNDS.get(bound_name) or T4_ALTERED[bound_name]
    out = []
    with mpmath.workdps(DPS):
        for name, z in inst.comparators.items():
            regret, dist, grads, eta, scale = _t4_terms(inst, z)
            out.append(_margin(bound_name, regret, fn(dist, grads, eta), scale, f"{inst.kind}/{name}",
                               dict(T=len(inst.beta), K=inst.k.shape[1], eta=float(inst.eta),
                                    comparator_norm=float(np.linalg.norm(z)))))
    return out


def comparators_t4(k: np.ndarray, beta: np.ndarray, d0: np.ndarray, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Comparators for a T4 instance: the best fixed preconditioner in hindsight (T4's strongest, from
    :func:`osdn_ref.best_fixed_precond`), the start d_0 itself, and a random point. T4 holds for every
    comparator, so each is a valid test; the best fixed one makes the regret largest."""
    from osdn_ref import best_fixed_precond

    return dict(best_fixed=best_fixed_precond(k, beta), start=np.array(d0, float),
                random=rng.uniform(-3, 3, size=k.shape[1]))


def _t5_terms(inst: T5Instance):
    ks = []
    for row in inst.k:
        x = _mp(row)
        if inst.unit:
            n = mpmath.sqrt(mpmath.fsum(a * a for a in x))
            x = [a / n for a in x]
        ks.append(x)
    ds = _mp(inst.d_star)
    scale_b = mpmath.mpf(float(inst.beta_scale))
    beta = [scale_b / mpmath.fsum(a * a * b for a, b in zip(kt, ds)) for kt in ks]  # β_t⟨k_t², d*⟩ = scale
    eta = mpmath.mpf(float(inst.eta))
    d0 = _mp(inst.d0)
    pts, _ = learner_mp(ks, beta, eta, d0)
    rho2 = [(1 - bt * mpmath.fsum(a * a * y for a, y in zip(kt, p))) ** 2 for p, kt, bt in zip(pts, ks, beta)]
    e0 = mpmath.fsum((a - b) ** 2 for a, b in zip(d0, ds))
    return mpmath.fsum(rho2), e0, eta, beta, rho2


T5_BOUNDS: Dict[str, Callable] = {"T5": lambda e0, eta: e0 / (eta * (2 - eta))}
T5_ALTERED: Dict[str, Callable] = {
    # replace η(2 − η) by 2η: forgets that the step's own overshoot η²‖u‖²ρ² eats into the decrease
    "T5 with η(2 − η) replaced by 2η": lambda e0, eta: e0 / (2 * eta),
    # a bound 10% tighter than T5
    "T5 with 0.9 × the bound": lambda e0, eta: 0.9 * e0 / (eta * (2 - eta)),
}


def check_t5(inst: T5Instance, bound_name: str = "T5") -> Margin:
    """Σ_t ρ_t(d̄_{t-1})² ≤ ‖d_0 − d*‖²/(η(2 − η)) (T5, or an alteration from ``T5_ALTERED``)."""
    fn = T5_BOUNDS.get(bound_name) or T5_ALTERED[bound_name]
    with mpmath.workdps(DPS):
        s, e0, eta, beta, rho2 = _t5_terms(inst)
        bound = fn(e0, eta)
        return _margin(bound_name, s, bound, max(s, abs(bound)), inst.kind,
                       dict(T=inst.k.shape[0], K=inst.k.shape[1], eta=float(inst.eta),
                            beta_max=float(max(beta)) if beta else 0.0, unit=inst.unit,
                            last_rho2=float(rho2[-1]) if rho2 else 0.0))


def t5_assumptions(inst: T5Instance) -> Dict[str, bool]:
    """Which assumptions of T5 the instance satisfies (unit keys, β ≤ 1, 0 < η < 2; α ≡ 1, clip
    inactive and consistency hold by construction)."""
    with mpmath.workdps(DPS):
        _, _, _, beta, _ = _t5_terms(inst)
        return dict(unit_keys=inst.unit, beta_le_1=bool(max(beta, default=0) <= 1 + SLACK),
                    eta_in_0_2=bool(0 < inst.eta < 2))


def degenerate(m: Margin) -> bool:
    """0 ≤ 0: value and bound both exactly zero (e.g. every key zero), which says nothing about tightness."""
    return m.value == 0.0 and m.bound == 0.0


def summarize(margins: Sequence[Margin]) -> Optional[Margin]:
    """The non-degenerate margin with the smallest relative slack (ties broken by absolute margin)."""
    return min((m for m in margins if not degenerate(m)), key=lambda m: (m.rel, m.margin), default=None)
