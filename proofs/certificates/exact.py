"""Exact rational certificate of T1: the chunkwise form C1–C3 *equals* the recurrence E1–E8.

Both forms are written here a second time, independently of ``osdn_ref``, over Python ``Fraction``s, for
one head and one sequence; decays are given as rational γ_t (so e^{λ_i−λ_j} = Π_{j<l≤i} γ_l) and gates
as rational α_t, including 0 (a hard reset: products over a zero gate are exactly 0). With no rounding
anywhere, the two forms must agree *exactly* for every chunk size: any algebra slip in C1–C3 shows up as
a non-zero difference. ``alter`` selects deliberately wrong variants used by the tests to show that the
comparison can fail.
"""

from __future__ import annotations

from fractions import Fraction as F
from typing import List, Optional, Sequence

import numpy as np
from hypothesis import strategies as st

__all__ = ["recurrent_exact", "chunkwise_exact", "exact_problems", "ALTERATIONS"]

Vec = List[F]
Mat = List[List[F]]

ALTERATIONS = ("no_gate_ratio", "symmetric_keys", "read_before_write")


def _dot(a: Sequence[F], b: Sequence[F]) -> F:
    return sum((x * y for x, y in zip(a, b)), F(0))


def _clip(x: F, lo: Optional[F], hi: Optional[F]) -> F:
    if lo is not None and x < lo:
        x = lo
    if hi is not None and x > hi:
        x = hi
    return x


def recurrent_exact(q, k, v, beta, gamma, alpha, eta, d_prior, d_min, d_max, S0: Mat, d0: Vec, scale=F(1)):
    """E1–E8 token by token. S is stored as V×K (S k ≈ v). Returns (outputs [T][V], S_T, d_T)."""
    K, V = len(d_prior), len(S0)
    S = [row[:] for row in S0]
    d = list(d0)
    out = []
    for t in range(len(k)):
        d_bar = [d_prior[i] + alpha[t] * (d[i] - d_prior[i]) for i in range(K)]  # E1
        p = [_clip(x, d_min, d_max) for x in d_bar]  # E2
        kw = [p[i] * k[t][i] for i in range(K)]  # E3
        r = [v[t][a] - gamma[t] * _dot(S[a], k[t]) for a in range(V)]  # E4
        S = [[gamma[t] * S[a][i] + beta[t] * r[a] * kw[i] for i in range(K)] for a in range(V)]  # E5
        out.append([scale * _dot(S[a], q[t]) for a in range(V)])  # E6
        kn2 = _dot(k[t], k[t])
        rho = 1 - beta[t] * sum((k[t][i] ** 2 * d_bar[i] for i in range(K)), F(0))  # E7
        d = [d_bar[i] + (eta * rho * beta[t] * k[t][i] ** 2 / kn2 if kn2 else F(0)) for i in range(K)]  # E8
    return out, S, d


def _ratio(alpha: Sequence[F], i: int, j: int, alter=None) -> F:
    """Γ_i/Γ_j = Π_{j<l≤i} α_l (0-based local indices, j ≤ i)."""
    if alter == "no_gate_ratio":
        return F(1)
    r = F(1)
    for l in range(j + 1, i + 1):
        r *= alpha[l]
    return r


def _solve_unit_lower(L: Mat, b: List) -> List:
    """(I + L) x = b, L strictly lower, b a list of scalars or of vectors."""
    x: List = []
    for i in range(len(b)):
        acc = b[i]
        for j in range(i):
            if isinstance(acc, list):
                acc = [a - L[i][j] * y for a, y in zip(acc, x[j])]
            else:
                acc = acc - L[i][j] * x[j]
        x.append(acc)
    return x


def chunkwise_exact(q, k, v, beta, gamma, alpha, eta, d_prior, d_min, d_max, S0: Mat, d0: Vec, chunk: int,
                    scale=F(1), alter: Optional[str] = None):
    """C1–C3 chunk by chunk, carrying only (S, δ) across chunk boundaries."""
    K, V, T = len(d_prior), len(S0), len(k)
    S = [row[:] for row in S0]
    delta = [d0[i] - d_prior[i] for i in range(K)]
    out: List[List[F]] = []
    for c0 in range(0, T, chunk):
        idx = list(range(c0, min(c0 + chunk, T)))
        n = len(idx)
        al = [alpha[t] for t in idx]
        # ---- C1: the d-scan
        u = [[beta[t] * k[t][i] ** 2 for i in range(K)] for t in idx]
        kn2 = [_dot(k[t], k[t]) for t in idx]
        uh = [[x / kn2[m] if kn2[m] else F(0) for x in u[m]] for m in range(n)]
        a = [1 - _dot(u[m], d_prior) for m in range(n)]
        Gam = [_ratio(al, m, -1, alter) for m in range(n)]  # Γ_i = Π_{l≤i} α_l
        L = [[eta * _ratio(al, i, j, alter) * _dot(u[i], uh[j]) if j < i else F(0) for j in range(n)] for i in range(n)]
        rhs = [eta * (a[i] - Gam[i] * _dot(u[i], delta)) for i in range(n)]
        w = _solve_unit_lower(L, rhs)
        d_bar = [[d_prior[c] + Gam[i] * delta[c] + sum((_ratio(al, i, j, alter) * w[j] * uh[j][c] for j in range(i)), F(0))
                  for c in range(K)] for i in range(n)]
        delta = [Gam[n - 1] * delta[c] + sum((_ratio(al, n - 1, j, alter) * w[j] * uh[j][c] for j in range(n)), F(0))
                 for c in range(K)]
        # ---- C2: write keys
        kw = [[_clip(d_bar[m][c], d_min, d_max) * k[t][c] for c in range(K)] for m, t in enumerate(idx)]
        if alter == "symmetric_keys":
            kw_A = [list(k[t]) for t in idx]
        else:
            kw_A = kw
        # ---- C3: WY/UT state update; decays e^{λ_i−λ_j} = Π_{j<l≤i} γ_l, e^{λ_i} = Π_{l≤i} γ_l
        gm = [gamma[t] for t in idx]
        dec = lambda i, j: _ratio(gm, i, j)  # noqa: E731
        el = [dec(i, -1) for i in range(n)]
        A = [[beta[idx[i]] * dec(i, j) * _dot(k[idx[i]], kw_A[j]) if j < i else F(0) for j in range(n)] for i in range(n)]
        b = [[beta[t] * (v[t][aa] - el[m] * _dot(S[aa], k[t])) for aa in range(V)] for m, t in enumerate(idx)]
        U = _solve_unit_lower(A, b)
        hi = n - 1 if alter != "read_before_write" else None
        for i, t in enumerate(idx):
            top = i if hi is not None else i - 1
            o = [scale * (el[i] * _dot(S[aa], q[t]) + sum((dec(i, j) * _dot(kw[j], q[t]) * U[j][aa]
                                                             for j in range(top + 1)), F(0))) for aa in range(V)]
            out.append(o)
        S = [[el[n - 1] * S[aa][c] + sum((dec(n - 1, j) * kw[j][c] * U[j][aa] for j in range(n)), F(0))
              for c in range(K)] for aa in range(V)]
        del hi
    return out, S, [d_prior[c] + delta[c] for c in range(K)]


@st.composite
def exact_problems(draw, max_T=7, max_K=3, max_V=2):
    """Hypothesis strategy: a small rational problem (keyword arguments of :func:`recurrent_exact`) with zero
    keys, β up to 3/2, decays 1/2 and 3/4, gates 0, 1/2, 1, η up to 3/2, and the clip absent, default or active."""
    T = draw(st.integers(1, max_T))
    K = draw(st.integers(1, max_K))
    V = draw(st.integers(1, max_V))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rat = lambda lo=-3, hi=3: F(int(rng.integers(lo, hi + 1)), int(rng.integers(1, 4)))  # noqa: E731
    pick = lambda xs: xs[int(rng.integers(0, len(xs)))]  # noqa: E731
    kw = dict(
        q=[[rat() for _ in range(K)] for _ in range(T)],
        k=[[rat() for _ in range(K)] if rng.uniform() > 0.1 else [F(0)] * K for _ in range(T)],
        v=[[rat() for _ in range(V)] for _ in range(T)],
        beta=[pick([F(0), F(1, 4), F(1, 2), F(1), F(3, 2)]) for _ in range(T)],
        gamma=[pick([F(1), F(1), F(1, 2), F(3, 4)]) for _ in range(T)],
        alpha=[pick([F(1), F(1), F(1, 2), F(0)]) for _ in range(T)],
        eta=pick([F(0), F(1, 2), F(1), F(3, 2)]),
        d_prior=[pick([F(1), F(1, 2), F(3, 2)]) for _ in range(K)],
        S0=[[rat() for _ in range(K)] for _ in range(V)],
        d0=[rat(0, 3) for _ in range(K)],
    )
    clip = draw(st.sampled_from(["none", "default", "active"]))
    kw["d_min"], kw["d_max"] = {"none": (None, None), "default": (F(0), None), "active": (F(3, 4), F(5, 4))}[clip]
    return kw
