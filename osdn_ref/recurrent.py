"""The OSDN recurrence E1–E8, token by token, in float64 (spec §2).

This is the oracle every other form is checked against. It is written to be read against the
spec line by line: one Python loop over time, vectorised over batch and heads.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .inputs import Prepared, prepare, segments

__all__ = ["recurrent_osdn", "osdn_step", "TRACE_FIELDS"]

TRACE_FIELDS = {
    "p": "played preconditioner p_t = clip(d̄_{t-1}) (E2), [B, T, H, K]",
    "d_bar": "learner's point d̄_{t-1} after APF (E1), [B, T, H, K]",
    "k": "read key k_t as used (after the optional L2 normalisation), [B, T, H, K]",
    "rho_played": "ρ_t(p_t) (E7 at the played point), [B, T, H]",
    "rho_learner": "ρ_t(d̄_{t-1}) (E7 at the learner's point), [B, T, H]",
    "residual_pre": "‖r_t‖ = ‖v_t − γ_t S_{t-1} k_t‖ (E4), [B, T, H]",
    "residual_post": "‖v_t − S_t k_t‖ after the write (D5), [B, T, H]",
    "feedback": "h_t(d̄_{t-1}) = (ρ_t(d̄_{t-1})² − 1) / (2‖k_t‖²) (D3); 0 where k_t = 0, [B, T, H]",
}


def osdn_step(h, d, q, k, v, beta, g, alpha, eta, d_prior, scale, d_min, d_max):
    """One token of the recurrence, E1–E8, for a batch of heads.

    E5 is the right-preconditioned gradient step of D2 on the inner loss of D1; E1 and E8 together are
    the learner of D4 (it reads k, β and its own d, never the state).

    Parameters
    ----------
    h : [..., K, V]   state S_{t-1}ᵀ
    d : [..., K]      learner d_{t-1}
    q, k : [..., K];  v : [..., V];  beta, g, alpha : [...];  eta : [...];  d_prior : [..., K]

    Returns
    -------
    h_new [..., K, V], d_new [..., K], o [..., V], and a dict of per-token trace quantities.
    """
    d_bar = d_prior + alpha[..., None] * (d - d_prior)  # E1
    p = np.clip(d_bar, d_min, d_max)  # E2
    k_w = p * k  # E3: write key
    gamma = np.exp(g)[..., None]
    Sk = np.einsum("...kv,...k->...v", h, k)  # S_{t-1} k_t
    r = v - gamma * Sk  # E4
    h_new = gamma[..., None] * h + beta[..., None, None] * k_w[..., :, None] * r[..., None, :]  # E5
    o = scale * np.einsum("...kv,...k->...v", h_new, q)  # E6
    k2 = k * k
    u = beta[..., None] * k2
    kn2 = np.sum(k2, axis=-1)
    rho_learner = 1.0 - np.sum(u * d_bar, axis=-1)  # E7 at d̄_{t-1}
    rho_played = 1.0 - np.sum(u * p, axis=-1)  # E7 at p_t
    nz = kn2 > 0
    safe = np.where(nz, kn2, 1.0)
    step = np.where(nz, eta * rho_learner / safe, 0.0)
    d_new = d_bar + step[..., None] * u  # E8 (0 where k_t = 0)
    post = v - np.einsum("...kv,...k->...v", h_new, k)
    trace = dict(
        p=p, d_bar=d_bar, k=k, rho_played=rho_played, rho_learner=rho_learner,
        residual_pre=np.linalg.norm(r, axis=-1), residual_post=np.linalg.norm(post, axis=-1),
        feedback=np.where(nz, (rho_learner ** 2 - 1.0) / (2.0 * safe), 0.0),
    )
    return h_new, d_new, o, trace


def _run(prep: Prepared, want_trace: bool):
    B, T, H, K, V, N = (getattr(prep.dims, a) for a in "BTHKVN")
    o = np.empty((B, T, H, V))
    h_out = np.empty((N, H, K, V))
    d_out = np.empty((N, H, K))
    trace: Dict[str, np.ndarray] = {}
    if want_trace:
        for name in TRACE_FIELDS:
            trace[name] = np.empty((B, T, H, K) if name in ("p", "d_bar", "k") else (B, T, H))
    if prep.cu_seqlens is None:
        groups = [(slice(0, B), slice(0, B), 0, T)]  # all batch rows advance together
    else:
        groups = [(slice(n, n + 1), slice(0, 1), t0, t1) for n, _, t0, t1 in segments(prep)]
    eta = prep.eta[None, :]
    for nsl, bsl, t0, t1 in groups:
        h = prep.h0[nsl].copy()
        d = prep.d0[nsl].copy()
        for t in range(t0, t1):
            h, d, o[bsl, t], tr = osdn_step(
                h, d, prep.q[bsl, t], prep.k[bsl, t], prep.v[bsl, t], prep.beta[bsl, t],
                prep.g[bsl, t], prep.alpha[bsl, t], eta, prep.d_prior[None], prep.scale,
                prep.d_min, prep.d_max,
            )
            if want_trace:
                for name in TRACE_FIELDS:
                    trace[name][bsl, t] = tr[name]
        h_out[nsl] = h
        d_out[nsl] = d
    return o, h_out, d_out, trace


def recurrent_osdn(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None,
    use_qk_l2norm_in_kernel=False, cu_seqlens=None, return_trace=False,
):
    """OSDN by its recurrence E1–E8, token by token, in float64 (spec §2, §6).

    Implements E1 (APF), E2 (clip), E3 (write key), E4 (residual), E5 (write: the right-preconditioned
    gradient step of D2), E6 (read), E7 (contraction factor) and E8 (hypergradient step of D3).

    Parameters
    ----------
    q, k : array [B, T, H, K]
        Queries and keys.
    v : array [B, T, H, V]
        Values.
    beta : array [B, T, H]
        Write strengths β_t.
    g : array [B, T, H], optional
        Log-decays g_t ≤ 0 (γ_t = exp g_t); default 0.
    alpha : array [B, T, H], optional
        APF gates α_t ∈ [0, 1]; default 1. α_t = 0 resets the learner to d°.
    eta : float or array [H]
        Hyper step η ≥ 0.
    d_prior : array [H, K], optional
        Prior d°; default ones.
    scale : float, optional
        Output scale; default K^(-1/2).
    initial_state : array [N, H, K, V], optional
        h_0 = S_0ᵀ; default zeros.
    initial_precond : array [N, H, K], optional
        d_0; default d°.
    output_final_state : bool
        Return (h_T, d_T) when true, else (None, None).
    d_min, d_max : float
        Clip bounds of E2 (d_max None means +∞).
    use_qk_l2norm_in_kernel : bool
        Replace q, k by x / sqrt(‖x‖² + 1e-6) first.
    cu_seqlens : int array [N + 1], optional
        Packed sequence offsets (B must be 1).
    return_trace : bool
        Also return a dict of per-token quantities (see ``TRACE_FIELDS``).

    Returns
    -------
    o : float64 [B, T, H, V]
    final_state : float64 [N, H, K, V] or None
    final_precond : float64 [N, H, K] or None
    trace : dict, only when return_trace
    """
    prep = prepare(q, k, v, beta, g, alpha, eta, d_prior, scale, initial_state, initial_precond,
                   d_min, d_max, use_qk_l2norm_in_kernel, cu_seqlens)
    o, h, d, trace = _run(prep, return_trace)
    out = (o, h if output_final_state else None, d if output_final_state else None)
    return out + (trace,) if return_trace else out
