"""Make the figures of the docs from the float64 reference (``python docs/figures.py``; a few seconds).

* ``regret_t4.png``: realised regret of the preconditioner learner against the best fixed
  preconditioner in hindsight of each prefix, and the T4 bound, over T.
* ``contraction_t5.png``: |ρ_t| of OSDN vs DeltaNet's |1 − β_t| on a consistent stream (log scale), and
  Σρ_t² against the T5 bound.
* ``apf_precond.png``: the played preconditioner p_t over time with and without APF on a stream whose key
  statistics (and so its right-Newton comparator) change halfway.

Every quantity comes from :mod:`osdn_ref` (recurrent_osdn's trace, regret_bound, best_fixed_precond,
right_newton_comparator, contraction_sum_bound, consistent_stream). The PNGs are committed under
docs/_static/figures; the docs build runs this script only when one is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import osdn_ref  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "figures"


def _run(k, beta, eta, alpha=None, d_prior=None, d0=None):
    """One head through E1–E8 with the clip inactive; returns the trace of batch row 0, head 0."""
    T, K = k.shape
    rng = np.random.default_rng(0)
    kw = dict(eta=eta, d_min=-np.inf, return_trace=True)
    if alpha is not None:
        kw["alpha"] = alpha[None, :, None]
    if d_prior is not None:
        kw["d_prior"] = d_prior[None]
    if d0 is not None:
        kw["initial_precond"] = d0[None, None]
    *_, tr = osdn_ref.recurrent_osdn(rng.standard_normal((1, T, 1, K)), k[None, :, None],
                                     rng.standard_normal((1, T, 1, 4)), beta[None, :, None], **kw)
    return {n: v[0, :, 0] for n, v in tr.items()}


def fig_regret(path: Path) -> None:
    rng = np.random.default_rng(4)
    T, K, eta = 400, 8, 0.5
    scales = np.linspace(0.4, 1.6, K)  # anisotropic keys: the case a diagonal preconditioner targets
    k = rng.standard_normal((T, K)) * scales
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    beta = rng.uniform(0.3, 1.0, T)
    d0 = np.ones(K)
    tr = _run(k, beta, eta, d0=d0)
    Ts = np.unique(np.geomspace(1, T, 40).astype(int))
    reg, bnd, dist, grad = [], [], [], []
    for t in Ts:
        comp = osdn_ref.best_fixed_precond(k[:t], beta[:t])
        r = osdn_ref.regret_bound(k[:t], beta[:t], tr["d_bar"][:t], d0, comp, eta)
        reg.append(r["regret"]); bnd.append(r["bound"]); dist.append(r["distance_term"]); grad.append(r["gradient_term"])
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.plot(Ts, bnd, "k-", lw=2, label="T4 bound  ‖d₀ − d‖²/(2η) + (η/2) Σ‖∇h‖²")
    ax.plot(Ts, dist, "k:", lw=1, label="  distance term")
    ax.plot(Ts, grad, "k--", lw=1, label="  gradient term")
    ax.plot(Ts, reg, "C3o-", ms=3, label="regret vs best fixed d in hindsight (per prefix)")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("tokens T (for T < K the best fixed d is a minimum-norm solution far from d₀)")
    ax.set_ylabel("Σ h_t(d̄_{t−1}) − Σ h_t(d)")
    ax.set_title(f"T4: regret of the learner (K={K}, η={eta}, α≡1, clip inactive)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=-0.01)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_contraction(path: Path) -> None:
    rng = np.random.default_rng(1)
    T, K, eta = 240, 16, 1.0
    k, beta, d_star = osdn_ref.consistent_stream(rng, T, K, n_keys=12)
    d0 = np.ones(K)
    tr = _run(k, beta, eta, d0=d0)
    rho = tr["rho_learner"]
    res = osdn_ref.contraction_sum_bound(k, beta, tr["d_bar"], d0, d_star, eta)
    t = np.arange(1, T + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    a1.semilogy(t, np.abs(1.0 - beta), "C0-", lw=1, label="DeltaNet |1 − β_t| (η = 0, d = 1)")
    a1.semilogy(t, np.maximum(np.abs(rho), 1e-18), "C3-", lw=1, label="OSDN |ρ_t(d̄_{t−1})| (η = 1)")
    a1.set_xlabel("token t")
    a1.set_ylabel("token-local contraction factor")
    a1.set_title("T5: residual kept by each write (D5)", fontsize=10)
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=8)
    a2.plot(t, np.cumsum(rho ** 2), "C3-", label="Σ_{s≤t} ρ_s²")
    a2.axhline(res["bound"], color="k", lw=2, label="‖d₀ − d*‖²/(η(2 − η))")
    a2.set_xlabel("token t")
    a2.set_title(f"T5 bound (unit keys, β ≤ 1, consistent d*, K={K})", fontsize=10)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_apf(path: Path) -> None:
    rng = np.random.default_rng(2)
    T, K, eta = 800, 6, 0.15
    half = T // 2
    d1 = np.linspace(2.4, 3.4, K)  # right-Newton comparator of the first half
    d2 = np.linspace(1.0, 1.5, K)[::-1]  # ... and of the second half
    k = rng.standard_normal((T, K))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    beta = np.where(np.arange(T) < half, 1.0 / ((k * k) @ d1), 1.0 / ((k * k) @ d2))
    runs = {"no APF (α ≡ 1)": np.ones(T), "APF (α ≡ 0.99)": np.full(T, 0.99)}
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), sharey=True)
    coords = [0, K // 2, K - 1]
    for ax, (name, alpha) in zip(axes, runs.items()):
        tr = _run(k, beta, eta, alpha=alpha)
        for c, col in zip(coords, ("C0", "C2", "C3")):
            ax.plot(np.arange(1, T + 1), tr["p"][:, c], col + "-", lw=1.2, label=f"p_t[{c}]")
            ax.hlines([d1[c]], 1, half, colors=col, linestyles=":", lw=1)
            ax.hlines([d2[c]], half + 1, T, colors=col, linestyles=":", lw=1)
        ax.axvline(half, color="gray", lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("token t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("played preconditioner p_t (E2)")
    axes[0].legend(fontsize=8, loc="upper right", title="dotted: d* of each half", title_fontsize=8)
    fig.suptitle(f"Key statistics change at t = {half}: played preconditioner with and without APF "
                 f"(K={K}, η={eta}, d° = 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    fig_regret(OUT / "regret_t4.png")
    fig_contraction(OUT / "contraction_t5.png")
    fig_apf(OUT / "apf_precond.png")
    print(f"figures written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
