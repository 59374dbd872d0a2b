"""Symbolic certificates of the identities behind D1–D5, T4 and T5 (T1 is certified in exact arithmetic by
``proofs.certificates.exact``).

Each ``claim_*`` function returns ``(lhs, rhs)`` for a *general* dimension: lengths are sympy
symbols (K for keys, V for values) and vectors are ``IndexedBase`` objects, so the identity proved by
:func:`proofs.certificates.sums.prove_zero` holds for every K, V ≥ 1 (see ``sums`` for the three
rewrite rules used). Every claim takes an optional ``alter`` argument that returns a deliberately
*wrong* variant; the test-suite checks that those are rejected, so the certificates can fail.

Notation (spec §1–§3): S ∈ R^{V×K} is the state, k the read key, v the value, p (or d) a
preconditioner, β the write strength, γ the decay, r = v − γ S k the residual, k² = k ⊙ k,
u = β k², ρ(d) = 1 − β⟨k², d⟩.
"""

from __future__ import annotations

from typing import Tuple

import sympy as sp

from .sums import dot, norm2

__all__ = [
    "K", "V", "claim_D1_gradient", "claim_D2_write_key", "claim_D3_feedback", "claim_D3_gradient",
    "claim_D4_affine", "claim_D5_contraction", "claim_D5_newton", "claim_T5_one_step",
    "claim_T5_one_step_general", "claim_T5_u_norm", "claim_T4_one_step", "CLAIMS", "ALTERED",
]

K, V = sp.symbols("K V", integer=True, positive=True)
a, b, c, i, j = sp.symbols("a b c i j", integer=True)  # free component indices / summation indices
S, k, v, p, d, e, u = (sp.IndexedBase(n) for n in ("S", "k", "v", "p", "d", "e", "u"))
beta, gamma, eta = sp.symbols("beta gamma eta", real=True)

Pair = Tuple[sp.Expr, sp.Expr]


def _Sk(Sm, a_, gam=1):
    """(γ S k)_a = γ Σ_b S[a, b] k[b]."""
    bb = sp.Symbol("b_Sk", integer=True)
    return gam * sp.Sum(Sm[a_, bb] * k[bb], (bb, 0, K - 1))


def _r(a_, gam=1):
    """r_a = v_a − γ (S k)_a  (E4)."""
    return v[a_] - _Sk(S, a_, gam)


def _loss(Sm_entry):
    """ℓ(S) = ½ Σ_a (Σ_b S[a,b] k[b] − v[a])² for a state given entrywise by Sm_entry(a, b)."""
    aa, bb = sp.Symbol("a_l", integer=True), sp.Symbol("b_l", integer=True)
    inner = sp.Sum(Sm_entry(aa, bb) * k[bb], (bb, 0, K - 1)) - v[aa]
    return sp.Rational(1, 2) * sp.Sum(inner ** 2, (aa, 0, V - 1))


def rho(w, alter=None):
    """ρ(w) = 1 − β ⟨k², w⟩  (E7)."""
    kk = sp.Symbol("i_rho", integer=True)
    if alter == "rho_unsquared":
        return 1 - beta * sp.Sum(k[kk] * w[kk], (kk, 0, K - 1))
    return 1 - beta * sp.Sum(k[kk] ** 2 * w[kk], (kk, 0, K - 1))


def claim_D1_gradient(alter=None) -> Pair:
    """D1: ∂ℓ/∂S[a, b] = −r_a k_b, for a free component (a, b)."""
    ell = _loss(lambda x, y: S[x, y])
    lhs = sp.diff(ell, S[a, b])
    rhs = -_r(a) * k[b]
    if alter == "sign":
        rhs = -rhs
    return lhs, rhs


def claim_D2_write_key(alter=None) -> Pair:
    """D2: [S − β ∇ℓ(S) diag(p)]_{ab} = [S + β r (p ⊙ k)ᵀ]_{ab} (E3, E5 with γ = 1).

    The gradient is taken from D1 (proved separately) and diag(p)_{cb} = p_c δ_{cb}.
    """
    cc = sp.Symbol("c_D2", integer=True)
    grad = lambda x, y: -_r(x) * k[y]  # noqa: E731  (D1)
    lhs = S[a, b] - beta * sp.Sum(grad(a, cc) * p[cc] * sp.KroneckerDelta(cc, b), (cc, 0, K - 1))
    ktilde_b = p[b] * k[b]
    if alter == "left":  # precondition the value side instead: β (p ⊙ r) kᵀ — not the same thing
        return lhs, S[a, b] + beta * p[a] * _r(a) * k[b]
    if alter == "squared":
        ktilde_b = p[b] ** 2 * k[b]
    return lhs, S[a, b] + beta * _r(a) * ktilde_b


def _S_written(x, y, w, gam=1):
    """Entry (x, y) of γ S + β r (w ⊙ k)ᵀ, the OSDN write (E5) with preconditioner w."""
    return gam * S[x, y] + beta * _r(x, gam) * w[y] * k[y]


def claim_D3_feedback(alter=None) -> Pair:
    """D3, cross-multiplied to stay polynomial:
    2‖k‖² [ℓ(S − β∇ℓ diag d) − ℓ(S)] = (ρ(d)² − 1) ‖∇ℓ(S)‖_F²,  with ‖∇ℓ‖_F² = Σ_{a,b} r_a² k_b²."""
    aa, bb = sp.Symbol("a_g", integer=True), sp.Symbol("b_g", integer=True)
    grad_f2 = sp.Sum(sp.Sum(_r(aa) ** 2 * k[bb] ** 2, (bb, 0, K - 1)), (aa, 0, V - 1))
    lhs = 2 * norm2(k, K) * (_loss(lambda x, y: _S_written(x, y, d)) - _loss(lambda x, y: S[x, y]))
    factor = 2 if alter == "no_half" else 1
    rhs = factor * (rho(d) ** 2 - 1) * grad_f2
    return lhs, rhs


def claim_D3_gradient(alter=None) -> Pair:
    """D3: ∂/∂d_c of h(d) = (ρ(d)² − 1) / (2‖k‖²) equals −ρ(d) β k_c² / ‖k‖² (times ‖k‖² both sides)."""
    h_times = (rho(d) ** 2 - 1) / 2  # = ‖k‖² h(d); ‖k‖² does not depend on d
    lhs = sp.diff(h_times, d[c])
    rhs = -rho(d) * beta * k[c] ** 2
    if alter == "sign":
        rhs = -rhs
    return lhs, rhs


def claim_D5_contraction(alter=None) -> Pair:
    """D5 / T3: v − S_t k = ρ(p) r component-wise, S_t = γS + β r (p ⊙ k)ᵀ, r = v − γ S k."""
    bb = sp.Symbol("b_D5", integer=True)
    lhs = v[a] - sp.Sum(_S_written(a, bb, p, gamma) * k[bb], (bb, 0, K - 1))
    rhs = rho(p, alter="rho_unsquared" if alter == "rho_unsquared" else None) * _r(a, gamma)
    if alter == "rho_squared":
        rhs = rho(p) ** 2 * _r(a, gamma)
    return lhs, rhs


def claim_D5_newton(alter=None) -> Pair:
    """D5: the right-Newton step S − ∇ℓ (k kᵀ)^† = S + r kᵀ / ‖k‖² fits token t exactly:
    (S' k)_a = v_a. Multiplied by ‖k‖² (k ≠ 0) to stay polynomial, with (k kᵀ)^† = k kᵀ / ‖k‖⁴."""
    bb = sp.Symbol("b_N", integer=True)
    n2 = norm2(k, K)
    scale = 2 if alter == "double" else 1
    lhs = sp.Sum((n2 * S[a, bb] + scale * _r(a) * k[bb]) * k[bb], (bb, 0, K - 1))
    return lhs, n2 * v[a]


def claim_D4_affine(alter=None) -> Pair:
    """D4: with δ = d − d°, one token of E1 + E8 is δ' = α δ (I − η u ûᵀ) + η ρ(d°) û, component c.

    E1: d̄ = d° + α δ; E8: d' = d̄ + η ρ(d̄) u / ‖k‖², u = β k², û = u / ‖k‖² (k ≠ 0). Both sides are
    multiplied by ‖k‖² to stay polynomial. ``d0`` is the prior d°, ``d`` the learner d_{t-1}.
    """
    d0 = sp.IndexedBase("d0")
    alpha = sp.Symbol("alpha", real=True)
    n2 = norm2(k, K)
    ii = sp.Symbol("i_D4", integer=True)
    dbar = lambda m: d0[m] + alpha * (d[m] - d0[m])  # noqa: E731  (E1)
    rho_dbar = 1 - beta * sp.Sum(k[ii] ** 2 * dbar(ii), (ii, 0, K - 1))  # E7 at d̄
    lhs = n2 * (dbar(c) - d0[c]) + eta * rho_dbar * beta * k[c] ** 2  # ‖k‖² (d'_c − d°_c), E8
    delta_u = sp.Sum((d[ii] - d0[ii]) * beta * k[ii] ** 2, (ii, 0, K - 1))  # ⟨δ, u⟩
    gate = 1 if alter == "ungated_feedback" else alpha  # the APF gate must also multiply δ u ûᵀ
    rhs = n2 * alpha * (d[c] - d0[c]) - eta * gate * delta_u * beta * k[c] ** 2 + eta * rho(d0) * beta * k[c] ** 2
    return lhs, rhs


def claim_T5_one_step(alter=None) -> Pair:
    """Behind T5, in the spec's form (unit keys, consistent d*): ‖e'‖² = ‖e‖² − η(2 − η‖u‖²)ρ².

    e = d̄ − d* is the learner's error before the token, u = β k², ρ = ρ(d̄) (E7) and, with unit
    keys, E8 reads e' = e + η ρ u. Consistency β⟨k², d*⟩ = ⟨u, d*⟩ = 1 is used by writing the 1 of
    E7 as ⟨u, d*⟩, so ρ = ⟨u, d*⟩ − ⟨u, d̄⟩ = −⟨u, e⟩: ``e`` stands for d̄ − d*.
    """
    ii = sp.Symbol("i_T5", integer=True)
    r_ = -dot(u, e, K)
    lhs = sp.Sum((e[ii] + eta * r_ * u[ii]) ** 2, (ii, 0, K - 1))
    sign = 1 if alter == "plus" else -1
    rhs = norm2(e, K) + sign * eta * (2 - eta * norm2(u, K)) * r_ ** 2
    if alter == "no_eta_u":  # ‖u‖² ≤ 1 is an inequality (claim_T5_u_norm), not an identity
        rhs = norm2(e, K) - eta * (2 - eta) * r_ ** 2
    return lhs, rhs


def claim_T5_one_step_general(alter=None) -> Pair:
    """The one-step identity from E7/E8 for *any* keys and *any* comparator d* (no assumption):

        n² ‖e'‖² = n² ‖e‖² − η (2n − η‖u‖²) ρ² + 2 η n ρ c,

    with n = ‖k‖², u = β k², e = d̄ − d*, e' = d' − d*, d' = d̄ + η ρ(d̄) u / n (E8),
    ρ = ρ(d̄) = 1 − ⟨u, d̄⟩ (E7) and c = 1 − ⟨u, d*⟩, the comparator's consistency defect. Unit keys
    (n = 1) and consistency (c = 0) give :func:`claim_T5_one_step`; without them the spec's form is false
    (the ``unit_form`` alteration drops n and c).
    """
    ds = sp.IndexedBase("dstar")
    n2 = norm2(k, K)
    ii = sp.Symbol("i_T5g", integer=True)
    uu = lambda m: beta * k[m] ** 2  # noqa: E731
    rho_d = 1 - sp.Sum(uu(ii) * d[ii], (ii, 0, K - 1))
    defect = 1 - sp.Sum(uu(ii) * ds[ii], (ii, 0, K - 1))
    u2 = sp.Sum(uu(ii) ** 2, (ii, 0, K - 1))
    lhs = sp.Sum((n2 * (d[ii] - ds[ii]) + eta * rho_d * uu(ii)) ** 2, (ii, 0, K - 1))  # (n e'_i)²
    e2 = sp.Sum((d[ii] - ds[ii]) ** 2, (ii, 0, K - 1))
    if alter == "unit_form":
        return lhs, n2 ** 2 * (e2 - eta * (2 - eta * u2) * rho_d ** 2)
    return lhs, n2 ** 2 * e2 - eta * (2 * n2 - eta * u2) * rho_d ** 2 + 2 * eta * n2 * rho_d * defect


def claim_T5_u_norm(alter=None) -> Pair:
    """Why η(2 − η‖u‖²) ≥ η(2 − η) under T5's assumptions: ‖u‖² = β² Σ k_i⁴ and

        (Σ_i k_i²)² − Σ_i k_i⁴ = Σ_i Σ_j k_i² k_j² (1 − δ_ij) ≥ 0,

    a sum of non-negative terms, so ‖u‖² ≤ β² ‖k‖⁴ = β² ≤ 1 for unit keys and β ≤ 1.
    """
    ii, jj = sp.Symbol("i_u", integer=True), sp.Symbol("j_u", integer=True)
    lhs = norm2(k, K) ** 2 - sp.Sum(k[ii] ** 4, (ii, 0, K - 1))
    off = 0 if alter == "no_diagonal_removed" else 1
    rhs = sp.Sum(sp.Sum(k[ii] ** 2 * k[jj] ** 2 * (1 - off * sp.KroneckerDelta(ii, jj)), (jj, 0, K - 1)),
                 (ii, 0, K - 1))
    return lhs, rhs


def claim_T4_one_step(alter=None) -> Pair:
    """Behind T4 (per token, w = 1/‖k‖², g = ∇h(x) = −w ρ(x) u, x' = x − η g, any comparator z):
    h(x) − h(z) = [‖x − z‖² − ‖x' − z‖²]/(2η) + (η/2)‖g‖² − (w/2)⟨u, x − z⟩²,
    with h(y) = w (ρ(y)² − 1)/2, ρ(y) = 1 − ⟨u, y⟩. Multiplied by 2η to stay polynomial.
    The last term is ≤ 0: that is the whole regret bound."""
    x, z = sp.IndexedBase("x"), sp.IndexedBase("z")
    w = sp.Symbol("w", positive=True)
    ii = sp.Symbol("i_T4", integer=True)
    rho_ = lambda y: 1 - dot(u, y, K)  # noqa: E731
    h = lambda y: w * (rho_(y) ** 2 - 1) / 2  # noqa: E731
    g = lambda m: -w * rho_(x) * u[m]  # noqa: E731
    dist2 = lambda f: sp.Sum(f(ii) ** 2, (ii, 0, K - 1))  # noqa: E731
    lhs = 2 * eta * (h(x) - h(z))
    half = 0 if alter == "no_eta_term" else 1
    rhs = (dist2(lambda m: x[m] - z[m]) - dist2(lambda m: x[m] - eta * g(m) - z[m])
           + half * eta ** 2 * dist2(g) - eta * w * sp.Sum(u[ii] * (x[ii] - z[ii]), (ii, 0, K - 1)) ** 2)
    return lhs, rhs


CLAIMS = {
    "D1 gradient": claim_D1_gradient,
    "D2 write key": claim_D2_write_key,
    "D3 feedback": claim_D3_feedback,
    "D3 gradient": claim_D3_gradient,
    "D4 affine learner": claim_D4_affine,
    "D5 contraction": claim_D5_contraction,
    "D5 right-Newton": claim_D5_newton,
    "T5 one step": claim_T5_one_step,
    "T5 one step, general keys": claim_T5_one_step_general,
    "T5 norm of u": claim_T5_u_norm,
    "T4 one step": claim_T4_one_step,
}

# claim name -> alterations that are false and must be rejected
ALTERED = {
    "D1 gradient": ["sign"],
    "D2 write key": ["left", "squared"],
    "D3 feedback": ["no_half"],
    "D3 gradient": ["sign"],
    "D4 affine learner": ["ungated_feedback"],
    "D5 contraction": ["rho_squared", "rho_unsquared"],
    "D5 right-Newton": ["double"],
    "T5 one step": ["plus", "no_eta_u"],
    "T5 one step, general keys": ["unit_form"],
    "T5 norm of u": ["no_diagonal_removed"],
    "T4 one step": ["no_eta_term"],
}

# claim name -> {free component index: length symbol of its axis}, for concrete instantiation
COMPONENTS = {
    "D1 gradient": {a: V, b: K},
    "D2 write key": {a: V, b: K},
    "D3 gradient": {c: K},
    "D4 affine learner": {c: K},
    "D5 contraction": {a: V},
    "D5 right-Newton": {a: V},
}
