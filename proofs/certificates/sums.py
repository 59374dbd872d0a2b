"""A small, auditable prover for identities between finite sums of symbolic length.

Vectors and matrices are sympy ``IndexedBase`` objects (``k[i]``, ``S[a, b]``); an inner product of
length ``n`` is ``Sum(x[i] * y[i], (i, 0, n - 1))`` with ``n`` a *symbol*. So an identity proved here
holds for every dimension n ≥ 1 at once, not for a few sampled sizes.

:func:`normalize` rewrites an expression with exactly three rules, each valid for every finite n:

1. linearity: ``Σ_j (f + g) = Σ_j f + Σ_j g`` and ``Σ_j c·f = c·Σ_j f`` when c does not contain j;
2. the Kronecker-delta rule ``Σ_j f(j) δ(j, x) = f(x)`` for an index x in range (components are
   always taken at valid indices);
3. renaming of bound indices (α-conversion): every summation index is renamed by its nesting depth,
   so ``Σ_i e[i]u[i]`` and ``Σ_j e[j]u[j]`` become the same object.

After normalisation the sums that remain are treated as opaque atoms and the expression is expanded
as an ordinary commutative polynomial in them; :func:`prove_zero` returns True only when that
polynomial is identically 0. Nothing is sampled, nothing is approximated: a True answer is a proof
(modulo the correctness of sympy's polynomial expansion); a False answer means the three rules did
not reduce the difference to 0, and :func:`counterexample` then looks for a concrete dimension and
rational point where the difference is non-zero, which *disproves* the claimed identity.
"""

from __future__ import annotations

import random
from typing import Dict, Iterable, Optional

import sympy as sp
from sympy.concrete.delta import deltasummation

__all__ = ["normalize", "prove_zero", "counterexample", "dot", "norm2"]

_PREFIX = "_j"


def _dummy(depth: int) -> sp.Symbol:
    return sp.Symbol(f"{_PREFIX}{depth}", integer=True)


def _lin_sum(function: sp.Expr, limits, depth: int) -> sp.Expr:
    """Rules 1–3 for Σ over ``limits`` (innermost first, as sympy stores them) of ``function``."""
    (j, lo, hi) = limits[-1]
    jj = _dummy(depth)
    if len(limits) > 1:  # Σ_{outer} Σ_{inner...} f: rename the outer index first, then recurse inside
        inner_limits = [tuple(sp.sympify(x).xreplace({j: jj}) for x in lim) for lim in limits[:-1]]
        body = _lin_sum(function.xreplace({j: jj}), inner_limits, depth + 1)
    else:
        body = _lin(function.xreplace({j: jj}), depth + 1)
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(body)):
        indep, dep = term.as_independent(jj, as_Add=False)
        if dep.has(sp.KroneckerDelta):
            out += indep * deltasummation(dep, (jj, lo, hi), no_piecewise=True)
        elif dep == 1:
            out += indep * (hi - lo + 1)
        else:
            out += indep * sp.Sum(dep, (jj, lo, hi))
    return sp.expand(out)


def _lin(expr: sp.Expr, depth: int) -> sp.Expr:
    """One pass of rules 1–3 over expr (sums at nesting level ``depth`` get index _j{depth})."""
    if isinstance(expr, sp.Sum):
        return _lin_sum(expr.function, list(expr.limits), depth)
    if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)):
        return sp.expand(expr.func(*[_lin(a, depth) for a in expr.args]))
    return expr


def normalize(expr: sp.Expr, max_passes: int = 12) -> sp.Expr:
    """Apply rules 1–3 until the expression stops changing."""
    cur = sp.expand(expr)
    for _ in range(max_passes):
        nxt = _lin(cur, 0)
        if nxt == cur:
            return nxt
        cur = nxt
    return cur


def prove_zero(expr: sp.Expr) -> bool:
    """True iff ``expr`` normalises to the zero polynomial, i.e. is proved identically 0."""
    return normalize(expr) == 0


def dot(x: sp.IndexedBase, y: sp.IndexedBase, n: sp.Symbol, i: Optional[sp.Symbol] = None, extra=1) -> sp.Sum:
    """⟨x, y⟩ = Σ_{i<n} x[i] y[i] (times ``extra``, which may depend on i)."""
    i = sp.Symbol("i_dot", integer=True) if i is None else i
    return sp.Sum(x[i] * y[i] * extra, (i, 0, n - 1))


def norm2(x: sp.IndexedBase, n: sp.Symbol) -> sp.Sum:
    """‖x‖² = Σ_{i<n} x[i]²."""
    i = sp.Symbol("i_nrm", integer=True)
    return sp.Sum(x[i] ** 2, (i, 0, n - 1))


def _instantiate(expr: sp.Expr, dims: Dict[sp.Symbol, int], rng: random.Random) -> sp.Expr:
    """Replace symbolic lengths by numbers, expand the sums, and every remaining symbol or indexed
    entry by a random small rational."""
    e = expr.xreplace({s: sp.Integer(v) for s, v in dims.items()}).doit()
    e = e.replace(lambda a: isinstance(a, sp.KroneckerDelta), lambda a: a.doit())
    atoms = sorted(e.atoms(sp.Indexed, sp.Symbol) - {s for s in e.atoms(sp.Symbol) if s.is_integer and str(s).startswith(_PREFIX)},
                   key=str)
    vals = {a: sp.Rational(rng.randint(-9, 9), rng.randint(1, 5)) for a in atoms if not isinstance(a, sp.Idx)}
    return sp.expand(e.xreplace(vals))  # exact rational arithmetic


def counterexample(expr: sp.Expr, lengths: Iterable[sp.Symbol], components: Optional[Dict[sp.Symbol, sp.Symbol]] = None,
                   tries: int = 40, seed: int = 0):
    """Search small dimensions (1..4) and random rational points for a non-zero value of ``expr``.

    Returns (dims, value) for the first point found where the expression is non-zero, else None.
    ``components`` maps each free component index (e.g. ``a``) to the length symbol of its axis
    (e.g. ``V``); it is drawn uniformly in range.
    """
    rng = random.Random(seed)
    lengths = list(lengths)
    for t in range(tries):
        dims = {n: rng.randint(1, 4) for n in lengths}
        for idx, length in (components or {}).items():
            dims[idx] = rng.randint(0, dims[length] - 1)
        val = _instantiate(expr, dims, rng)
        if val != 0:
            return dims, val
    return None
