"""``osdn verify``: check T1–T5 (and the special cases of spec §2) on seeded problems.

Prints one table (statement, quantity, value, bound, margin, pass) and writes it to
``reports/verify.md`` and ``reports/verify.json``. Float64 identities are held to bounds measured
on this reference (a few hundred ulps of the outputs' magnitude), not to zero; inequalities (T4,
T5) are held to their own right-hand sides.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .chunkwise import chunkwise_osdn
from .contraction import consistent_stream, contraction_identity_gap, contraction_sum_bound
from .feedback import feedback, feedback_from_state
from .highprec import float64_error_vs_mp, recurrent_osdn_mp
from .recurrent import osdn_step, recurrent_osdn
from .regret import best_fixed_precond, dynamic_regret, regret_bound
from .vjp import GRAD_NAMES, recurrent_osdn_vjp

__all__ = ["Row", "run_checks", "random_problem", "deltanet_loop", "main"]

# Bounds for float64 identities, relative to the magnitude of what is compared. Measured on this
# reference: the largest values are ~2e-15 (reports/verify.json), so 1e-12 leaves room for other
# BLAS builds and longer sequences while any algebraic slip (errors of 1e-3 and up) still fails.
IDENTITY_RTOL = 1e-12
FD_RTOL = 1e-6  # central differences at step 1e-6 have truncation + rounding error ~1e-9
MP_RTOL = 1e-13


@dataclass
class Row:
    """One line of the verification table."""

    statement: str
    quantity: str
    problem: str
    value: float
    bound: Optional[float]
    passed: Optional[bool]

    @property
    def margin(self) -> Optional[float]:
        return None if self.bound is None else self.bound - self.value


def random_problem(seed: int, B: int, T: int, H: int, K: int, V: int, *, gates=True, clip=True,
                   states=True, apf=True) -> Dict[str, object]:
    """Seeded inputs for :func:`osdn_ref.recurrent_osdn` exercising E1–E8 (gates, APF with a hard
    reset α = 0, clip bounds that bind, initial state and preconditioner)."""
    rng = np.random.default_rng(seed)
    kw: Dict[str, object] = dict(
        q=rng.standard_normal((B, T, H, K)),
        k=rng.standard_normal((B, T, H, K)) / np.sqrt(K) * rng.uniform(0.5, 1.5, (B, T, H, 1)),
        v=rng.standard_normal((B, T, H, V)),
        beta=rng.uniform(0.05, 1.0, (B, T, H)),
        eta=rng.uniform(0.2, 1.5, H),
        d_prior=rng.uniform(0.5, 1.5, (H, K)),
    )
    if gates:
        kw["g"] = -rng.uniform(0.0, 0.2, (B, T, H))
    if apf:
        a = rng.uniform(0.6, 1.0, (B, T, H))
        a[:, T // 2, 0] = 0.0  # one hard reset per sequence in head 0
        kw["alpha"] = a
    if clip:
        kw["d_min"], kw["d_max"] = 0.3, 1.6
    if states:
        kw["initial_state"] = rng.standard_normal((B, H, K, V))
        kw["initial_precond"] = rng.uniform(0.2, 2.0, (B, H, K))
    return kw


def deltanet_loop(q, k, v, beta, g=None, scale=None):
    """An independent plain (Gated) DeltaNet loop in the S = [V, K] layout: the special case
    η = 0, d° = 1, α = 1 of E1–E8 (spec §2). Returns o [B, T, H, V] and S_T [B, H, V, K]."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    S = np.zeros((B, H, V, K))
    o = np.zeros((B, T, H, V))
    for b in range(B):
        for hh in range(H):
            M = np.zeros((V, K))
            for t in range(T):
                gam = 1.0 if g is None else np.exp(g[b, t, hh])
                kt = k[b, t, hh]
                M = gam * M
                M = M - beta[b, t, hh] * np.outer(M @ kt - v[b, t, hh], kt)  # S ← S − β ∇ℓ (D1)
                o[b, t, hh] = scale * M @ q[b, t, hh]
            S[b, hh] = M
    return o, S


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _check_t1(rows: List[Row], sizes) -> None:
    for seed, (B, T, H, K, V) in enumerate(sizes):
        kw = random_problem(seed, B, T, H, K, V)
        name = f"B={B} T={T} H={H} K={K} V={V} seed={seed}"
        ref = recurrent_osdn(**kw, output_final_state=True)
        worst = max(_rel(x, y) for C in (1, 7, 16, 64)
                    for x, y in zip(chunkwise_osdn(**kw, output_final_state=True, chunk_size=C), ref))
        rows.append(Row("T1", "chunkwise (C=1,7,16,64) vs recurrent: max rel err", name, worst,
                        IDENTITY_RTOL, worst <= IDENTITY_RTOL))
        # chaining: [0, T1) then [T1, T) from the carried (h, d)
        t1 = T // 3
        first = {n: (x[:, :t1] if n in ("q", "k", "v", "beta", "g", "alpha") else x) for n, x in kw.items()}
        second = {n: (x[:, t1:] if n in ("q", "k", "v", "beta", "g", "alpha") else x) for n, x in kw.items()}
        o1, h1, d1 = recurrent_osdn(**first, output_final_state=True)
        second.update(initial_state=h1, initial_precond=d1)
        o2, h2, d2 = recurrent_osdn(**second, output_final_state=True)
        err = max(_rel(np.concatenate([o1, o2], 1), ref[0]), _rel(h2, ref[1]), _rel(d2, ref[2]))
        rows.append(Row("T1", f"state chaining at t={t1}: max rel err", name, err, IDENTITY_RTOL,
                        err <= IDENTITY_RTOL))
    # packed sequences equal separate runs
    B, T, H, K, V = 3, 40, 2, 8, 5
    kw = random_problem(99, B, T, H, K, V)
    per = [recurrent_osdn(**{m: (x[b:b + 1] if m not in ("eta", "d_prior", "d_min", "d_max") else x)
                             for m, x in kw.items()}, output_final_state=True) for b in range(B)]
    packed = {m: (x.reshape((1, B * T) + x.shape[2:]) if m in ("q", "k", "v", "beta", "g", "alpha") else x)
              for m, x in kw.items()}
    cs = np.arange(0, B * T + 1, T)
    pr = recurrent_osdn(**packed, cu_seqlens=cs, output_final_state=True)
    pc = chunkwise_osdn(**packed, cu_seqlens=cs, output_final_state=True, chunk_size=16)
    err = 0.0
    for res in (pr, pc):
        err = max(err, _rel(res[0].reshape(B, T, H, V), np.concatenate([p[0] for p in per])),
                  _rel(res[1], np.concatenate([p[1] for p in per])), _rel(res[2], np.concatenate([p[2] for p in per])))
    rows.append(Row("T1", "packed (cu_seqlens, recurrent and chunkwise) vs separate runs", f"N=3 T={T}",
                    err, IDENTITY_RTOL, err <= IDENTITY_RTOL))


def _walk_states(kw, fn: Callable) -> float:
    """Run E1–E8 on batch row 0 token by token and return the max of fn(h_prev, d_prev, token) ."""
    from .inputs import prepare
    p = prepare(**{m: x for m, x in kw.items()})
    h, d = p.h0[:1], p.d0[:1]
    worst = 0.0
    for t in range(p.dims.T):
        tok = dict(q=p.q[:1, t], k=p.k[:1, t], v=p.v[:1, t], beta=p.beta[:1, t], g=p.g[:1, t],
                   alpha=p.alpha[:1, t])
        worst = max(worst, fn(h, d, tok, p))
        h, d, _, _ = osdn_step(h, d, tok["q"], tok["k"], tok["v"], tok["beta"], tok["g"], tok["alpha"],
                               p.eta[None], p.d_prior[None], p.scale, p.d_min, p.d_max)
    return worst


def _check_d2_t2_t3(rows: List[Row]) -> None:
    kw = random_problem(7, 1, 60, 3, 8, 6)
    name = "B=1 T=60 H=3 K=8 V=6 seed=7"

    def d2(h, d, tok, p):  # E5 equals right-preconditioned gradient descent on ℓ_t (D2)
        d_bar = p.d_prior[None] + tok["alpha"][..., None] * (d - p.d_prior[None])
        pp = np.clip(d_bar, p.d_min, p.d_max)
        hg = np.exp(tok["g"])[..., None, None] * h  # the state the token reads, γ S_{t-1}
        r = tok["v"] - np.einsum("...kv,...k->...v", hg, tok["k"])
        e5 = hg + tok["beta"][..., None, None] * (pp * tok["k"])[..., :, None] * r[..., None, :]
        grad_S = -np.einsum("...v,...k->...vk", r, tok["k"])  # ∇ℓ(S) = −r kᵀ, S = hᵀ
        gd = np.swapaxes(np.swapaxes(hg, -1, -2) - tok["beta"][..., None, None] * grad_S * pp[..., None, :], -1, -2)
        return _rel(e5, gd)

    err = _walk_states(kw, d2)
    rows.append(Row("D2/T1", "OSDN write (E5) vs S − β∇ℓ(S)diag(p): max rel err", name, err,
                    IDENTITY_RTOL, err <= IDENTITY_RTOL))

    def t2(h, d, tok, p):  # feedback from the actual state equals the state-free formula
        hg = np.exp(tok["g"])[..., None, None] * h
        dd = p.d_prior[None] + tok["alpha"][..., None] * (d - p.d_prior[None])
        a = feedback_from_state(hg, tok["k"], tok["v"], tok["beta"], dd)
        b = feedback(dd, tok["k"], tok["beta"])
        return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))

    err = _walk_states(kw, t2)
    rows.append(Row("T2", "h_t(d̄) from state vs (ρ²−1)/(2‖k‖²): max rel err", name, err,
                    IDENTITY_RTOL, err <= IDENTITY_RTOL))
    gap = float(np.max(contraction_identity_gap(**kw)))
    rows.append(Row("T3", "v_t − S_t k_t vs ρ_t(p_t) r_t: max rel gap", name, gap, IDENTITY_RTOL,
                    gap <= IDENTITY_RTOL))


def _check_t4(rows: List[Row]) -> None:
    for seed, eta in ((11, 0.3), (12, 1.0), (13, 1.9)):
        rng = np.random.default_rng(seed)
        T, K = 500, 16
        k = rng.standard_normal((T, K)) * rng.uniform(0.3, 2.0, (1, K))  # anisotropic keys
        k *= rng.uniform(0.3, 1.3, (T, 1)) / np.linalg.norm(k, axis=-1, keepdims=True)  # non-unit norms
        beta = rng.uniform(0.0, 1.0, T)
        q = rng.standard_normal((1, T, 1, K))
        v = rng.standard_normal((1, T, 1, 4))
        _, _, _, tr = recurrent_osdn(q, k[None, :, None], v, beta[None, :, None], eta=eta,
                                     d_min=-np.inf, return_trace=True)
        d_bar = tr["d_bar"][0, :, 0]
        d0 = np.ones(K)
        for label, comp in (("best fixed d in hindsight", best_fixed_precond(k, beta, center=d0)),
                            ("prior d° = 1", d0)):
            r = regret_bound(k, beta, d_bar, d0, comp, eta)
            rows.append(Row("T4", f"regret vs {label}", f"T={T} K={K} η={eta} seed={seed}",
                            r["regret"], r["bound"], r["regret"] <= r["bound"]))


def _check_t5(rows: List[Row]) -> None:
    for seed, eta, n_keys in ((21, 0.5, 0), (22, 1.0, 6), (23, 1.9, 6)):
        rng = np.random.default_rng(seed)
        T, K = 600, 12
        k, beta, d_star = consistent_stream(rng, T, K, n_keys=n_keys)
        q = rng.standard_normal((1, T, 1, K))
        v = rng.standard_normal((1, T, 1, 4))
        _, _, _, tr = recurrent_osdn(q, k[None, :, None], v, beta[None, :, None], eta=eta,
                                     d_min=-np.inf, return_trace=True)
        d_bar = tr["d_bar"][0, :, 0]
        r = contraction_sum_bound(k, beta, d_bar, np.ones(K), d_star, eta)
        prob = f"T={T} K={K} η={eta} keys={'fresh' if not n_keys else n_keys} seed={seed}"
        rows.append(Row("T5", "Σ ρ_t(d̄)² vs ‖d₀ − d*‖²/(η(2−η))", prob, r["sum_rho2"], r["bound"],
                        r["sum_rho2"] <= r["bound"]))
        if n_keys:
            tail = slice(int(0.9 * T), T)
            osdn_tail = float(np.max(np.abs(r["rho"][tail])))
            delta_net = float(np.min(np.abs(1.0 - beta[tail])))
            rows.append(Row("T5", "max |ρ_t| OSDN (last 10%) vs DeltaNet's min |1 − β_t|", prob,
                            osdn_tail, delta_net, osdn_tail < delta_net))


def _check_special_cases(rows: List[Row]) -> None:
    B, T, H, K, V = 2, 50, 2, 6, 5
    kw = random_problem(31, B, T, H, K, V, clip=False, states=False, apf=False)
    for gated in (False, True):
        g = kw["g"] if gated else None
        o, h, _ = recurrent_osdn(kw["q"], kw["k"], kw["v"], kw["beta"], g=g, eta=0.0, d_min=0.5, d_max=2.0,
                                 output_final_state=True)
        o_ref, S_ref = deltanet_loop(kw["q"], kw["k"], kw["v"], kw["beta"], g=g)
        err = max(_rel(o, o_ref), _rel(h, np.swapaxes(S_ref, -1, -2)))
        rows.append(Row("§2", f"η=0, d°=1 vs independent {'Gated ' if gated else ''}DeltaNet loop",
                        f"B={B} T={T} H={H} K={K} V={V}", err, IDENTITY_RTOL, err <= IDENTITY_RTOL))
    # α = 0 resets the learner to d° exactly: the run after the reset equals a fresh run from d°
    kw = random_problem(32, 1, 40, 2, 6, 5)
    m = 17
    kw["alpha"][:, m] = 0.0
    o, h, d = recurrent_osdn(**kw, output_final_state=True)
    head = {n: (x[:, :m] if n in ("q", "k", "v", "beta", "g", "alpha") else x) for n, x in kw.items()}
    _, hm, _ = recurrent_osdn(**head, output_final_state=True)
    tail = {n: (x[:, m:] if n in ("q", "k", "v", "beta", "g", "alpha") else x) for n, x in kw.items()}
    tail.update(initial_state=hm, initial_precond=np.full((1, 2, 6), 123.0))  # any d: α_m = 0 forgets it
    o2, h2, d2 = recurrent_osdn(**tail, output_final_state=True)
    err = max(_rel(o2, o[:, m:]), _rel(h2, h), _rel(d2, d))
    rows.append(Row("E1", "α_t = 0 resets the learner to d° (run after reset vs fresh)", "T=40 reset at 17",
                    err, IDENTITY_RTOL, err <= IDENTITY_RTOL))


def _check_vjp(rows: List[Row]) -> None:
    kw = random_problem(41, 2, 7, 2, 3, 4)
    kw["use_qk_l2norm_in_kernel"] = True
    kw["alpha"] = np.where(kw["alpha"] == 0, 0.3, kw["alpha"])  # central differences need α ± ε in [0, 1]
    rng = np.random.default_rng(42)
    o, h, d = recurrent_osdn(**kw, output_final_state=True)
    do, dh, dd = rng.standard_normal(o.shape), rng.standard_normal(h.shape), rng.standard_normal(d.shape)
    grads = recurrent_osdn_vjp(**kw, do=do, dht=dh, ddt=dd, checkpoint=3)

    def loss(**over):
        oo, hh, dd_ = recurrent_osdn(**{**kw, **over}, output_final_state=True)
        return float(np.sum(oo * do) + np.sum(hh * dh) + np.sum(dd_ * dd))

    worst = 0.0
    eps = 1e-6
    for name in GRAD_NAMES:
        x = np.asarray(kw[name], float)
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += eps
            xm[idx] -= eps
            fd[idx] = (loss(**{name: xp}) - loss(**{name: xm})) / (2 * eps)
        worst = max(worst, _rel(grads[name], fd))
    rows.append(Row("VJP", "reverse-time VJP vs central differences, all 10 inputs: max rel err",
                    "B=2 T=7 H=2 K=3 V=4, l2norm, clip, APF", worst, FD_RTOL, worst <= FD_RTOL))


def _check_highprec(rows: List[Row]) -> None:
    worst = 0.0
    for seed in (51, 52):
        kw = random_problem(seed, 1, 30, 2, 4, 3)
        kw["use_qk_l2norm_in_kernel"] = True
        lo = recurrent_osdn(**kw, output_final_state=True)
        hi = recurrent_osdn_mp(**kw, output_final_state=True, dps=50)
        worst = max(worst, max(float64_error_vs_mp(a, b) for a, b in zip(lo, hi)))
    rows.append(Row("E1–E8", "float64 reference vs 50-digit mpmath twin: max rel err",
                    "B=1 T=30 H=2 K=4 V=3, 2 seeds", worst, MP_RTOL, worst <= MP_RTOL))


def _check_apf(rows: List[Row]) -> None:
    rng = np.random.default_rng(61)
    T, K = 600, 10
    scales = np.where(np.arange(T)[:, None] < T // 2, rng.uniform(0.3, 1.0, K), rng.uniform(0.3, 1.0, K)[::-1])
    k = rng.standard_normal((T, K)) * scales
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    beta = rng.uniform(0.5, 1.0, T)
    q, v = rng.standard_normal((1, T, 1, K)), rng.standard_normal((1, T, 1, 4))
    for a in (1.0, 0.98):
        alpha = np.full((1, T, 1), a)
        _, _, _, tr = recurrent_osdn(q, k[None, :, None], v, beta[None, :, None], alpha=alpha, eta=1.0,
                                     d_min=-np.inf, return_trace=True)
        r = dynamic_regret(k, beta, tr["d_bar"][0, :, 0], window=100)
        rows.append(Row("APF", f"dynamic regret vs 100-token windows, α={a} (path length "
                        f"{r['path_length']:.3f}); reported, no bound stated", f"T={T} K={K} switch at T/2",
                        float(r["dynamic_regret"]), None, None))


def run_checks(quick: bool = False) -> List[Row]:
    """Run every check (T1–T5, D2, E1 resets, VJP, high precision, APF) and return the rows."""
    rows: List[Row] = []
    sizes = [(2, 50, 2, 6, 5), (2, 130, 3, 16, 12)] if quick else \
        [(2, 50, 2, 6, 5), (2, 130, 3, 16, 12), (1, 700, 2, 32, 32)]
    _check_t1(rows, sizes)
    _check_d2_t2_t3(rows)
    _check_t4(rows)
    _check_t5(rows)
    _check_special_cases(rows)
    _check_vjp(rows)
    _check_highprec(rows)
    _check_apf(rows)
    return rows


def _fmt(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3e}"


def render_markdown(rows: List[Row], meta: Dict[str, object]) -> str:
    """The table as Markdown, with the run's metadata."""
    lines = ["# osdn verify", "", f"Generated by `osdn verify` on {meta['date']} ({meta['platform']}, "
             f"numpy {meta['numpy']}) in {meta['seconds']:.1f} s.", "",
             "Margin = bound − value; identities are held to measured float64 bounds, inequalities to "
             "their right-hand sides. APF rows report dynamic regret: the spec states no bound for it.", "",
             "| statement | quantity | problem | value | bound | margin | pass |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "info" if r.passed is None else ("yes" if r.passed else "**NO**")
        lines.append(f"| {r.statement} | {r.quantity} | {r.problem} | {_fmt(r.value)} | {_fmt(r.bound)} | "
                     f"{_fmt(r.margin)} | {ok} |")
    return "\n".join(lines) + "\n"


def render_text(rows: List[Row]) -> str:
    """The table as fixed-width text for the terminal."""
    head = ("statement", "quantity", "value", "bound", "margin", "pass")
    body = [(r.statement, r.quantity[:80], _fmt(r.value), _fmt(r.bound), _fmt(r.margin),
             "info" if r.passed is None else ("yes" if r.passed else "NO")) for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body])


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``osdn verify``: run the checks (T1–T5, D2, E1 resets, VJP, 50 digits, APF), print
    the table, write the reports."""
    ap = argparse.ArgumentParser(prog="osdn verify", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports", help="folder for verify.md and verify.json (default: reports)")
    ap.add_argument("--quick", action="store_true", help="skip the largest T1 problem")
    ns = ap.parse_args(argv)
    t0 = time.time()
    rows = run_checks(quick=ns.quick)
    meta = dict(date=time.strftime("%Y-%m-%d"), platform=platform.platform(), numpy=np.__version__,
                seconds=time.time() - t0, quick=ns.quick)
    print(render_text(rows))
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verify.md").write_text(render_markdown(rows, meta), encoding="utf-8")
    payload = dict(meta=meta, rows=[dict(asdict(r), margin=r.margin) for r in rows])
    (out / "verify.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    failed = [r for r in rows if r.passed is False]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} rows pass or are informational; "
          f"{len(failed)} failed. Wrote {out / 'verify.md'} and {out / 'verify.json'} ({meta['seconds']:.1f} s).")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
