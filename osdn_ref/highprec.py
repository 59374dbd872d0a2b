"""A high-precision twin of the recurrence E1–E8 in mpmath, to measure the float64 reference's own error.

Plain loops over batch, heads, time and features with ``mpmath.mpf`` numbers at a chosen number of
decimal digits; meant for small problems (a few thousand scalar operations per token).
"""

from __future__ import annotations

from typing import Optional, Tuple

import mpmath
import numpy as np

from .inputs import prepare, segments

__all__ = ["recurrent_osdn_mp", "float64_error_vs_mp"]


def recurrent_osdn_mp(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None,
    use_qk_l2norm_in_kernel=False, cu_seqlens=None, dps: int = 50,
) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """E1–E8 at ``dps`` decimal digits (default 50); same arguments as :func:`osdn_ref.recurrent_osdn`.

    The inputs are read as exact binary64 values and every operation, including the L2
    normalisation, exp(g) and the clip, is done in mpmath at ``dps`` digits.

    Returns
    -------
    o : object array of mpf [B, T, H, V];  final_state : [N, H, K, V] or None;
    final_precond : [N, H, K] or None (object arrays of mpf)
    """
    p = prepare(q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond,
                d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens)
    B, T, H, K, V, N = (getattr(p.dims, a) for a in "BTHKVN")
    with mpmath.workdps(dps):
        mpf = mpmath.mpf
        o = np.empty((B, T, H, V), dtype=object)
        h_out = np.empty((N, H, K, V), dtype=object)
        d_out = np.empty((N, H, K), dtype=object)
        scale_ = mpf(p.scale) if scale is not None else mpf(1) / mpmath.sqrt(K)
        lo = mpf(p.d_min) if np.isfinite(p.d_min) else None
        hi = mpf(p.d_max) if np.isfinite(p.d_max) else None
        eps = mpf(10) ** -6  # the literal 1e-6 of the spec, exactly

        def clip(x):
            if lo is not None:
                x = max(x, lo)
            return min(x, hi) if hi is not None else x

        def unit(x):
            x = [mpf(float(a)) for a in x]
            if not p.use_qk_l2norm:
                return x
            s = mpmath.sqrt(mpmath.fsum(a * a for a in x) + eps)
            return [a / s for a in x]

        for n, b, t0, t1 in segments(p):
            for hh in range(H):
                S = [[mpf(float(p.h0[n, hh, i, j])) for j in range(V)] for i in range(K)]  # h = Sᵀ
                d = [mpf(float(x)) for x in p.d0[n, hh]]
                dp = [mpf(float(x)) for x in p.d_prior[hh]]
                eta_ = mpf(float(p.eta[hh]))
                for t in range(t0, t1):
                    qt, kt = unit(p.q_raw[b, t, hh]), unit(p.k_raw[b, t, hh])
                    vt = [mpf(float(x)) for x in p.v[b, t, hh]]
                    bt, at = mpf(float(p.beta[b, t, hh])), mpf(float(p.alpha[b, t, hh]))
                    gam = mpmath.exp(mpf(float(p.g[b, t, hh])))
                    d_bar = [dp[i] + at * (d[i] - dp[i]) for i in range(K)]  # E1
                    pl = [clip(x) for x in d_bar]  # E2
                    kw = [pl[i] * kt[i] for i in range(K)]  # E3
                    r = [vt[j] - gam * mpmath.fsum(S[i][j] * kt[i] for i in range(K)) for j in range(V)]  # E4
                    S = [[gam * S[i][j] + bt * kw[i] * r[j] for j in range(V)] for i in range(K)]  # E5
                    for j in range(V):  # E6
                        o[b, t, hh, j] = scale_ * mpmath.fsum(S[i][j] * qt[i] for i in range(K))
                    u = [bt * x * x for x in kt]
                    kn2 = mpmath.fsum(x * x for x in kt)
                    rho = 1 - mpmath.fsum(u[i] * d_bar[i] for i in range(K))  # E7
                    step = eta_ * rho / kn2 if kn2 != 0 else mpf(0)
                    d = [d_bar[i] + step * u[i] for i in range(K)]  # E8
                for i in range(K):
                    d_out[n, hh, i] = d[i]
                    for j in range(V):
                        h_out[n, hh, i, j] = S[i][j]
    if not output_final_state:
        return o, None, None
    return o, h_out, d_out


def float64_error_vs_mp(float64_result, mp_result, dps: int = 50) -> float:
    """Largest |float64 − high-precision| relative to the largest high-precision magnitude.

    Used to bound the float64 reference of E1–E8 against :func:`recurrent_osdn_mp`.
    """
    with mpmath.workdps(dps):
        worst = mpmath.mpf(0)
        scale_ = mpmath.mpf(0)
        for x, y in zip(np.ravel(float64_result), np.ravel(mp_result)):
            worst = max(worst, abs(mpmath.mpf(float(x)) - y))
            scale_ = max(scale_, abs(y))
        return float(worst / scale_) if scale_ > 0 else float(worst)
