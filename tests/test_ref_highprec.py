"""The float64 reference measured against its own 50-digit mpmath twin (E1–E8 at high precision)."""

import numpy as np
from hypothesis import given, settings

from osdn_ref import float64_error_vs_mp, recurrent_osdn, recurrent_osdn_mp
from strategies import problems

# Stated bound on the float64 reference's relative error (max |err| / max |value|) on problems of
# up to 16 tokens with K, V ≤ 4: measured worst ≈ 4e-16 (about 2 ulp), bound 1e-13 leaves room for
# ill-conditioned draws while an algebraic slip (≥ 1e-8) fails.
MP_RTOL = 1e-13


@settings(max_examples=6)
@given(problems(max_T=16, max_K=4, max_V=4, max_B=1, max_H=2))
def test_float64_reference_agrees_with_its_50_digit_twin(kw):
    lo = recurrent_osdn(**kw, output_final_state=True)
    hi = recurrent_osdn_mp(**kw, output_final_state=True, dps=50)
    for a, b in zip(lo, hi):
        assert float64_error_vs_mp(a, b) <= MP_RTOL


def test_the_twin_really_computes_at_the_requested_precision():
    """50 and 60 digits agree to ~1e-48, while 16 digits differ from 50 at the float64 level: the
    twin's precision is real, so it can measure float64's error."""
    import mpmath
    rng = np.random.default_rng(5)
    B, T, H, K, V = 1, 12, 1, 4, 3
    kw = dict(q=rng.standard_normal((B, T, H, K)), k=rng.standard_normal((B, T, H, K)) * 0.5,
              v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)),
              g=-rng.uniform(0, 0.3, (B, T, H)), eta=0.9, use_qk_l2norm_in_kernel=True)
    o16, o50, o60 = (recurrent_osdn_mp(**kw, dps=d)[0] for d in (16, 50, 60))
    with mpmath.workdps(70):
        diff = lambda a, b: max(abs(mpmath.mpf(x) - mpmath.mpf(y)) for x, y in zip(a.ravel(), b.ravel()))
        assert diff(o50, o60) < mpmath.mpf(10) ** -45
        assert mpmath.mpf(10) ** -20 < diff(o16, o50) < mpmath.mpf(10) ** -12
