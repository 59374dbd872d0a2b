"""``osdn recall``: associative recall in miniature, OSDN against DeltaNet (issue 5, mechanism part).

N key–value pairs are written into the memory by the recurrence E1–E8 and read back with the final
state, V̂_i = S_T k_i (read key k_i, no output scale). The recall residual ratio
‖V̂ − V‖_F / ‖V‖_F is reported for DeltaNet (η = 0, which is E1–E8 with d = d° = 1, spec §2 special
case) and for OSDN on a grid of η, with and without APF (E1), across the load N/K, key geometries,
presentations and β. What the theory says to expect (spec §5, derived here, not the paper's claims):

* T3 / D5: the post-write residual of token t is ρ_t(p_t) r_t. DeltaNet with unit keys plays
  ρ_t = 1 − β; OSDN's learner (E8) moves d so that ρ_t → 0, i.e. it fits the *current* token exactly.
* D3: the feedback is state-free: it sees neither v nor the other stored keys, so it cannot see the
  cross-key interference that sets recall when N/K is large or keys are correlated.
* T5: with a right-Newton comparator d* (β_t⟨k_t², d*⟩ = 1 for all t) the learner's Σρ_t² is finite,
  so revisited keys (JRT-style repetition) are fitted ever more exactly; DeltaNet stays at |1 − β|.
  With unit keys d* = 1/β · 1 always exists, whatever the direction distribution of the keys.
* T4 / APF: with α < 1 the learner is pulled back to d° (E1) — useful only when the comparator drifts.

Definitions used here (the issue leaves them open; these are the choices of this module):

* Keys, K features, ``--K`` (default 32), values V = 16 features, v ~ N(0, I/V):
  - ``iso``: k = z/‖z‖, z ~ N(0, I).
  - ``aniso-dir``: k = (s ⊙ z)/‖s ⊙ z‖ with per-feature scales s log-uniform on [s_min, 1]
    (s_min = 0.1, a random permutation per seed): anisotropy in the *direction* distribution only;
    keys stay unit, so d* = 1/β still exists (T5 applies).
  - ``aniso-scale``: k = s ⊙ z/‖z‖: non-unit keys with ‖k‖ ≤ 1, so β‖k‖² ≤ β ≤ 1 < 2 and DeltaNet
    stays stable (no divergence to hide). The exact comparator is d* = 1/(β s²) (β⟨k², d*⟩ =
    β Σ s_i² z_i²/‖z‖² / (β s_i²) = 1): the case a diagonal preconditioner targets. T5 is stated for
    unit keys; its proof step ‖e_{t}‖² ≤ ‖e_{t-1}‖² − ρ_t²(2η/‖k_t‖² − η²β²) still gives the bound for
    ‖k_t‖ ≤ 1, β ≤ 1 (derived here, not in the spec).
  - ``corr``: k = (√(1−c) z + √c μ)/‖·‖ with one shared random direction μ per seed, c = 0.5
    (pairwise cosines ≈ 0.5). Unit keys, so d* = 1/β exists, but no diagonal d can undo correlation.
* Presentations: ``once`` (each pair once); ``jrt2`` / ``jrt4`` (the same N pairs, same order,
  presented 2 / 4 times — the JRT setting); ``update`` (the N keys presented twice, each pass in a
  fresh random order with freshly drawn values; the target is the value of the last pass).
* APF: a constant gate α_t = 1 − 1/W with W = 2K tokens (a forgetting horizon of two memory widths).
  With K = 32 that is α = 0.984. ``off`` is α = 1.
* Clip: d_min = 0, d_max = ∞ by default; for ``aniso-scale`` (where d* reaches 1/(β s_min²)) the
  grid also runs d_max = 10 (``--clip``).
* d° = 1 (d_prior ones), initial state 0, g = 0 (no decay), β constant over the stream.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .recurrent import recurrent_osdn

__all__ = [
    "GEOMETRIES",
    "PRESENTATIONS",
    "RecallConfig",
    "make_keys",
    "make_stream",
    "comparator",
    "write_memory",
    "read_back",
    "recall_residual_ratio",
    "delta_rule_reference",
    "run_regime",
    "run_grid",
    "summarize",
    "regime_sentences",
    "write_reports",
    "main",
]

GEOMETRIES = ("iso", "aniso-dir", "aniso-scale", "corr")
PRESENTATIONS = ("once", "jrt2", "jrt4", "update")
_REPEATS = {"once": 1, "jrt2": 2, "jrt4": 4, "update": 2}


# ----------------------------------------------------------------------------------------------
# Streams


def make_keys(rng: np.random.Generator, n: int, K: int, geometry: str, scales=None, mu=None,
              corr: float = 0.5) -> np.ndarray:
    """Draw ``n`` keys of one geometry (the inputs k_t of E3/E4/E7).

    Parameters
    ----------
    rng : numpy Generator
    n, K : int
        Number of keys and key width.
    geometry : {"iso", "aniso-dir", "aniso-scale", "corr"}
        See the module docstring. All but ``aniso-scale`` give unit keys, for which the right-Newton
        comparator of D5/T5 is d* = 1/β · 1.
    scales : array [K], optional
        Per-feature scales s (``aniso-*``); required there.
    mu : array [K], optional
        Shared unit direction (``corr``); required there.
    corr : float
        Weight c of the shared direction (``corr``).

    Returns
    -------
    keys : float64 [n, K]
    """
    z = rng.standard_normal((n, K))
    if geometry == "iso":
        k = z
    elif geometry == "aniso-dir":
        k = z * scales[None, :]
    elif geometry == "aniso-scale":
        return scales[None, :] * z / np.linalg.norm(z, axis=1, keepdims=True)
    elif geometry == "corr":
        k = math.sqrt(1.0 - corr) * z / math.sqrt(K) + math.sqrt(corr) * mu[None, :]
    else:
        raise ValueError(f"geometry: expected one of {GEOMETRIES}, got {geometry!r}")
    return k / np.linalg.norm(k, axis=1, keepdims=True)


def make_stream(geometry: str, presentation: str, n_pairs: int, K: int, V: int, seed: int,
                s_min: float = 0.1, corr: float = 0.5) -> Dict[str, np.ndarray]:
    """Build one seeded write stream of key–value pairs and its recall targets.

    The stream is what E1–E8 consume token by token; the targets are what a perfect memory returns
    for each distinct key (the latest value written to it, for ``update``).

    Parameters
    ----------
    geometry : str
        One of :data:`GEOMETRIES`.
    presentation : str
        One of :data:`PRESENTATIONS` (``once``, ``jrt2``, ``jrt4``: the same pairs in the same order
        R = 1, 2, 4 times; ``update``: two passes, fresh order and fresh values each pass).
    n_pairs, K, V : int
        Number of distinct keys N, key width K, value width V.
    seed : int
    s_min : float
        Smallest per-feature scale of the ``aniso-*`` geometries (scales log-uniform on [s_min, 1]).
    corr : float
        Shared-direction weight of ``corr``.

    Returns
    -------
    dict with ``k`` [T, K], ``v`` [T, V] (the stream), ``keys`` [N, K], ``targets`` [N, V] (read-back
    targets), ``scales`` [K] (ones unless ``aniso-*``), ``pass_index`` [T].
    """
    if presentation not in _REPEATS:
        raise ValueError(f"presentation: expected one of {PRESENTATIONS}, got {presentation!r}")
    rng = np.random.default_rng(seed)
    scales = np.ones(K)
    mu = None
    if geometry.startswith("aniso"):
        scales = rng.permutation(np.exp(np.linspace(math.log(s_min), 0.0, K)))
    if geometry == "corr":
        mu = rng.standard_normal(K)
        mu /= np.linalg.norm(mu)
    keys = make_keys(rng, n_pairs, K, geometry, scales=scales, mu=mu, corr=corr)
    R = _REPEATS[presentation]
    ks, vs, pidx = [], [], []
    values = rng.standard_normal((n_pairs, V)) / math.sqrt(V)
    for r in range(R):
        if presentation == "update":
            order = rng.permutation(n_pairs)
            if r > 0:
                values = rng.standard_normal((n_pairs, V)) / math.sqrt(V)
        else:
            order = np.arange(n_pairs)
        ks.append(keys[order])
        vs.append(values[order])
        pidx.append(np.full(n_pairs, r))
    return dict(k=np.concatenate(ks), v=np.concatenate(vs), keys=keys, targets=values.copy(),
                scales=scales, pass_index=np.concatenate(pidx))


def comparator(keys: np.ndarray, beta: float) -> Optional[np.ndarray]:
    """The right-Newton comparator d* of D5/T5 for a set of keys, when one exists.

    Solves β⟨k_i², d*⟩ = 1 for every key i (min-norm least squares, as in T4) and returns d* if it
    satisfies every equation to 1e-9, else None.

    Parameters
    ----------
    keys : array [N, K]
    beta : float

    Returns
    -------
    d_star : float64 [K] or None
    """
    A = beta * keys ** 2
    d, *_ = np.linalg.lstsq(A, np.ones(len(keys)), rcond=None)
    return d if np.max(np.abs(A @ d - 1.0)) < 1e-9 else None


# ----------------------------------------------------------------------------------------------
# Memory


def _fast_chunk_osdn():
    try:
        from osdn_fast import chunk_osdn  # noqa: F401  (the Triton kernel; may not exist yet)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "backend 'fast': osdn_fast.chunk_osdn is not importable here "
            f"({type(exc).__name__}: {exc}). The Triton kernel of spec §6 is required for this "
            "backend; use --backend reference (the float64 oracle) instead."
        ) from exc
    return chunk_osdn


def write_memory(k, v, beta, eta, alpha=None, d_max=None, backend: str = "reference",
                 want_rho: bool = False):
    """Write a batch of streams into the memory with E1–E8 and return the final state h_T = S_Tᵀ.

    Parameters
    ----------
    k : array [B, T, H, K];  v : array [B, T, H, V];  beta, alpha : array [B, T, H]
    eta : array [H]
        Hyper step per head (η = 0 is DeltaNet, spec §2).
    d_max : float, optional
        Clip bound of E2 (d_min = 0).
    backend : {"reference", "fast"}
        ``reference``: the float64 NumPy recurrence :func:`recurrent_osdn` (CPU).
        ``fast``: ``osdn_fast.chunk_osdn`` (spec §6, chunkwise C1–C3; GPU when CUDA is available);
        raises RuntimeError if it cannot be imported.
    want_rho : bool
        Also return ρ_t(d̄_{t-1}) (E7 at the learner's point, [B, T, H]); reference backend only.

    Returns
    -------
    h : float64 [B, H, K, V], d : float64 [B, H, K], rho : [B, T, H] or None
    """
    q = k  # the read-out o_t (E6) is not used; only the final state is read back
    if backend == "reference":
        out = recurrent_osdn(q, k, v, beta, alpha=alpha, eta=eta, output_final_state=True,
                             d_max=d_max, return_trace=want_rho)
        rho = out[3]["rho_learner"] if want_rho else None
        return out[1], out[2], rho
    if backend == "fast":
        chunk_osdn = _fast_chunk_osdn()
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        t = lambda x: None if x is None else torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32,  # noqa: E731
                                                             device=dev)
        _, h, d = chunk_osdn(t(q), t(k), t(v), t(beta), alpha=t(alpha), eta=t(np.asarray(eta)),
                             output_final_state=True, d_max=d_max)
        return h.detach().double().cpu().numpy(), d.detach().double().cpu().numpy(), None
    raise ValueError(f"backend: expected 'reference' or 'fast', got {backend!r}")


def read_back(h: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Read each key with the final state: V̂_i = S_T k_i = (k_iᵀ h_T) (E6 without q or scale).

    Parameters
    ----------
    h : array [..., K, V]
        Final state h_T = S_Tᵀ.
    keys : array [..., N, K]
        Read keys (the read key stays k, E3).

    Returns
    -------
    V_hat : [..., N, V]
    """
    return keys @ h


def recall_residual_ratio(V_hat: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Recall residual ratio ‖V̂ − V‖_F / ‖V‖_F over the last two axes (the quantity the paper reports
    as "recall residual ratio"; D5/T3 give its per-token version ρ_t r_t).

    Parameters
    ----------
    V_hat, V : array [..., N, V]

    Returns
    -------
    ratio : array [...]
    """
    return np.linalg.norm(V_hat - V, axis=(-2, -1)) / np.linalg.norm(V, axis=(-2, -1))


def delta_rule_reference(k: np.ndarray, v: np.ndarray, beta: float) -> np.ndarray:
    """Plain DeltaNet, S ← S + β (v − S k) kᵀ (D1), written independently of E1–E8.

    Parameters
    ----------
    k : array [T, K];  v : array [T, V];  beta : float

    Returns
    -------
    h : float64 [K, V]   (= S_Tᵀ)
    """
    S = np.zeros((v.shape[1], k.shape[1]))
    for kt, vt in zip(k, v):
        S += beta * np.outer(vt - S @ kt, kt)
    return S.T


# ----------------------------------------------------------------------------------------------
# Grid


@dataclass
class RecallConfig:
    """The grid of ``osdn recall`` (spec labels: η of E8, α of E1, β of E5, d_max of E2)."""

    K: int = 32
    V: int = 16
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    loads: Sequence[float] = (0.25, 0.5, 1.0, 2.0)
    betas: Sequence[float] = (0.1, 0.5, 1.0)
    etas: Sequence[float] = (0.5, 1.0, 1.5)
    geometries: Sequence[str] = GEOMETRIES
    presentations: Sequence[str] = PRESENTATIONS
    clip_geometries: Sequence[str] = ("aniso-scale",)
    clip: float = 10.0
    s_min: float = 0.1
    corr: float = 0.5
    apf_window: float = 2.0  # in units of K tokens
    backend: str = "reference"
    heads: List[dict] = field(default_factory=list)

    def head_grid(self) -> List[dict]:
        """Heads of one run: DeltaNet (η = 0) then every η × APF ∈ {off, on}."""
        alpha_on = 1.0 - 1.0 / (self.apf_window * self.K)
        heads = [dict(eta=0.0, apf=False, alpha=1.0)]
        for e in self.etas:
            for apf in (False, True):
                heads.append(dict(eta=float(e), apf=apf, alpha=alpha_on if apf else 1.0))
        return heads


def run_regime(cfg: RecallConfig, geometry: str, presentation: str, load: float,
               d_max: Optional[float] = None, backend: Optional[str] = None) -> dict:
    """Run one regime for all seeds × β (batch axis) and all heads η × APF (head axis) at once.

    Every head reads the same stream; head 0 is DeltaNet (η = 0, spec §2 special case), the
    others OSDN (E1–E8).

    Returns
    -------
    dict with ``ratio`` [S, nβ, H] (recall residual ratios), ``rho_last`` [S, nβ, H] (mean |ρ_t(d̄)|
    (E7) over the last pass, reference only), ``d_final`` [S, nβ, H] (mean final d), and
    ``d_star_max`` [nβ] (largest comparator entry over seeds, NaN where none exists),
    ``comparator_exists`` [nβ] (a right-Newton comparator d* exists for every seed, D5/T5).
    """
    backend = backend or cfg.backend
    heads = cfg.head_grid()
    H = len(heads)
    N = max(1, int(round(load * cfg.K)))
    streams = [make_stream(geometry, presentation, N, cfg.K, cfg.V, seed, cfg.s_min, cfg.corr)
               for seed in cfg.seeds]
    S, nb = len(streams), len(cfg.betas)
    T = streams[0]["k"].shape[0]
    k = np.stack([s["k"] for s in streams])  # [S, T, K]
    v = np.stack([s["v"] for s in streams])
    kb = np.broadcast_to(k[:, None, :, None, :], (S, nb, T, H, cfg.K)).reshape(S * nb, T, H, cfg.K)
    vb = np.broadcast_to(v[:, None, :, None, :], (S, nb, T, H, cfg.V)).reshape(S * nb, T, H, cfg.V)
    beta = np.broadcast_to(np.asarray(cfg.betas, float)[None, :, None, None], (S, nb, T, H))
    beta = beta.reshape(S * nb, T, H)
    alpha = np.broadcast_to(np.array([hd["alpha"] for hd in heads])[None, None, :], (S * nb, T, H))
    eta = np.array([hd["eta"] for hd in heads])
    want_rho = backend == "reference"
    h, d, rho = write_memory(kb, vb, beta, eta, alpha=alpha, d_max=d_max, backend=backend,
                             want_rho=want_rho)
    h = h.reshape(S, nb, H, cfg.K, cfg.V)
    keys = np.stack([s["keys"] for s in streams])[:, None, None]  # [S, 1, 1, N, K]
    targets = np.stack([s["targets"] for s in streams])[:, None, None]
    ratio = recall_residual_ratio(read_back(h, keys), targets)  # [S, nb, H]
    last = streams[0]["pass_index"] == streams[0]["pass_index"].max()
    rho_last = (np.abs(rho).reshape(S, nb, T, H)[:, :, last].mean(axis=2) if rho is not None
                else np.full((S, nb, H), np.nan))
    dstar = [[comparator(s["keys"], b) for s in streams] for b in cfg.betas]
    dsm = [max((float(x.max()) for x in row if x is not None), default=float("nan")) for row in dstar]
    return dict(ratio=ratio, rho_last=rho_last, d_final=d.reshape(S, nb, H, cfg.K).mean(-1),
                d_star_max=dsm, N=N, T=T, heads=heads,
                comparator_exists=[all(x is not None for x in row) for row in dstar])


def run_grid(cfg: RecallConfig, log=print) -> List[dict]:
    """Run every regime of the grid and flatten it to one record per (regime, load, β, head, clip).

    Each record carries the per-seed recall residual ratios of that OSDN head (E1–E8) and of
    DeltaNet (η = 0) on the same streams, their mean and std over seeds, and the learner's mean
    |ρ_t| (E7) over the last pass (T5: → 0 when a comparator exists and the learner converges).
    """
    records = []
    for geometry in cfg.geometries:
        clips = [None] + ([cfg.clip] if geometry in cfg.clip_geometries and cfg.clip else [])
        for presentation in cfg.presentations:
            for load in cfg.loads:
                for d_max in clips:
                    t0 = time.perf_counter()
                    res = run_regime(cfg, geometry, presentation, load, d_max=d_max)
                    log(f"  {geometry:11s} {presentation:6s} N/K={load:<5g} d_max={d_max}  "
                        f"T={res['T']:4d}  {time.perf_counter() - t0:5.2f}s")
                    for ib, beta in enumerate(cfg.betas):
                        base = res["ratio"][:, ib, 0]
                        for ih, hd in enumerate(res["heads"]):
                            if ih == 0 and d_max is not None:
                                continue  # DeltaNet ignores the clip (d stays at d° = 1)
                            r = res["ratio"][:, ib, ih]
                            records.append(dict(
                                geometry=geometry, presentation=presentation, load=float(load),
                                N=res["N"], T=res["T"], beta=float(beta), eta=hd["eta"],
                                apf=hd["apf"], alpha=hd["alpha"], d_max=d_max,
                                seeds=[float(x) for x in r], mean=float(r.mean()),
                                std=float(r.std(ddof=1)) if len(r) > 1 else 0.0,
                                deltanet_seeds=[float(x) for x in base],
                                deltanet_mean=float(base.mean()),
                                deltanet_std=float(base.std(ddof=1)) if len(base) > 1 else 0.0,
                                rho_last=float(np.mean(res["rho_last"][:, ib, ih])),
                                d_final=float(np.mean(res["d_final"][:, ib, ih])),
                                d_star_max=res["d_star_max"][ib],
                                comparator_exists=res["comparator_exists"][ib],
                            ))
    return records
