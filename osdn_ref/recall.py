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
  - ``aniso-drift``: as ``aniso-scale``, but the second half of the N keys (in stream order) has a
    fresh permutation s' of the scales: the per-key comparator jumps from 1/(βs²) to 1/(βs'²) halfway
    through every pass (and back at the start of the next), so a single d* exists only while the
    keys underdetermine it (N ≲ K); this is the drifting-comparator case APF (E1) is meant for.
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
    "eta_summary",
    "write_reports",
    "main",
]

GEOMETRIES = ("iso", "aniso-dir", "aniso-scale", "aniso-drift", "corr")
PRESENTATIONS = ("once", "jrt2", "jrt4", "jrt8", "update")
_REPEATS = {"once": 1, "jrt2": 2, "jrt4": 4, "jrt8": 8, "update": 2}


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
    geometry : {"iso", "aniso-dir", "aniso-scale", "aniso-drift", "corr"}
        See the module docstring. All but ``aniso-scale``/``aniso-drift`` give unit keys, for which the right-Newton
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
    elif geometry in ("aniso-scale", "aniso-drift"):
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
    targets), ``scales`` [K] (ones unless ``aniso-*``), ``scales2`` [K] (the scales of the second half of
    the keys for ``aniso-drift``, else ``scales``), ``pass_index`` [T].
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
    scales2 = scales
    h1 = (n_pairs + 1) // 2  # aniso-drift: the second half of the keys has other per-feature scales
    if geometry == "aniso-drift":
        scales2 = rng.permutation(scales)
        keys[h1:] = make_keys(rng, n_pairs - h1, K, geometry, scales=scales2)
    R = _REPEATS[presentation]
    ks, vs, pidx = [], [], []
    values = rng.standard_normal((n_pairs, V)) / math.sqrt(V)
    for r in range(R):
        if presentation == "update" and geometry == "aniso-drift":  # keep the drift in time
            order = np.concatenate([rng.permutation(h1), h1 + rng.permutation(n_pairs - h1)])
            if r > 0:
                values = rng.standard_normal((n_pairs, V)) / math.sqrt(V)
        elif presentation == "update":
            order = rng.permutation(n_pairs)
            if r > 0:
                values = rng.standard_normal((n_pairs, V)) / math.sqrt(V)
        else:
            order = np.arange(n_pairs)
        ks.append(keys[order])
        vs.append(values[order])
        pidx.append(np.full(n_pairs, r))
    return dict(k=np.concatenate(ks), v=np.concatenate(vs), keys=keys, targets=values.copy(),
                scales=scales, scales2=scales2, pass_index=np.concatenate(pidx))


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
    """Import ``osdn_fast.chunk_osdn``; without a CUDA driver, select the Triton interpreter first."""
    if "osdn_fast" not in sys.modules and "triton" not in sys.modules:
        import shutil

        if shutil.which("nvidia-smi") is None:
            os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU: the kernels run in the interpreter
    try:
        from osdn_fast import chunk_osdn  # the Triton kernel of spec §6
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


# ----------------------------------------------------------------------------------------------
# Summaries and reports


def _key(r):
    return (r["geometry"], r["presentation"], r["load"], r["beta"], r["eta"], r["apf"], r["d_max"])


def summarize(records: List[dict], eta: float = 1.0, apf: bool = False) -> List[dict]:
    """One row per (geometry, presentation, load, β, clip) for the OSDN head (η, APF) (E8, E1).

    Adds the OSDN/DeltaNet ratio of seed means (``ratio``), the per-seed ratio OSDN/DeltaNet on the
    same stream (``seed_ratio_mean``, ``seed_ratio_std``), the paired per-seed difference (``diff``,
    standard error ``diff_se``), and DeltaNet at β = 1 on the same streams (``deltanet_beta1``) —
    with unit keys that is what OSDN tends to as its learner reaches the comparator d* = 1/β · 1 (T5).

    Parameters
    ----------
    records : list of dict
        Output of :func:`run_grid`.
    eta : float
        Hyper step η (E8) of the OSDN head to summarise.
    apf : bool
        APF (E1) on or off.

    Returns
    -------
    rows : list of dict, in grid order.
    """
    by = {_key(r): r for r in records}
    rows = []
    for r in records:
        if r["eta"] != eta or r["apf"] != apf:
            continue
        o, d = np.array(r["seeds"]), np.array(r["deltanet_seeds"])
        diff = o - d
        sr = o / d
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        b1 = by.get((r["geometry"], r["presentation"], r["load"], 1.0, 0.0, False, None))
        rows.append(dict(r, ratio=r["mean"] / r["deltanet_mean"], diff=float(diff.mean()), diff_se=se,
                         seed_ratio_mean=float(sr.mean()),
                         seed_ratio_std=float(sr.std(ddof=1)) if len(sr) > 1 else 0.0,
                         deltanet_beta1=b1["deltanet_mean"] if b1 else float("nan")))
    return rows


def _verdict(row, tol=0.01):
    """'helps' / 'hurts' / 'same' from the paired per-seed difference (2 standard errors) and ratio."""
    if abs(row["ratio"] - 1.0) <= tol or not (abs(row["diff"]) > 2.0 * row["diff_se"]):
        return "same"
    return "helps" if row["diff"] < 0 else "hurts"


def _fmt_cases(rows):
    return ", ".join(f"N/K={r['load']:g} β={r['beta']:g} (×{r['seed_ratio_mean']:.2f} ± {r['seed_ratio_std']:.2f})"
                     for r in rows)


def _loads(rows):
    return "/".join(f"{x:g}" for x in sorted({r["load"] for r in rows}))


def regime_sentences(records: List[dict], eta: float = 1.0) -> Dict[str, str]:
    """One sentence per regime (geometry/presentation): where OSDN (η, APF off) helps, where it hurts
    (paired over seeds: more than 2 standard errors and more than 1%), and why in terms of T3–T5 and D3.

    Every clause is computed from the run, none is fixed text: the measured last-pass |ρ_t| (E7) of
    OSDN's learner against DeltaNet's (T5 says it falls when a comparator exists); for unit keys the
    count of decided cases whose sign agrees with DeltaNet at β = 1 against DeltaNet at β (the limit
    d* = 1/β · 1 of T5, where the OSDN write equals a full DeltaNet write); the count of hurting cases
    where OSDN nonetheless fits its own tokens better (lower |ρ|: T3 holds token-locally, the loss is
    cross-key interference the state-free feedback D3 cannot see); and the measured effect of APF (E1).

    Parameters
    ----------
    records : list of dict
        Output of :func:`run_grid`.
    eta : float
        The OSDN head (E8) the sentences are about.

    Returns
    -------
    dict regime -> sentence (markdown).
    """
    rows = [r for r in summarize(records, eta=eta) if r["d_max"] is None]
    apf_rows = {(r["geometry"], r["presentation"], r["load"], r["beta"]): r
                for r in summarize(records, eta=eta, apf=True) if r["d_max"] is None}
    dn = {(r["geometry"], r["presentation"], r["load"], r["beta"]): r
          for r in records if r["eta"] == 0.0 and r["d_max"] is None}
    k = lambda r: (r["geometry"], r["presentation"], r["load"], r["beta"])  # noqa: E731
    out = {}
    regimes = []
    for r in rows:
        if (r["geometry"], r["presentation"]) not in regimes:
            regimes.append((r["geometry"], r["presentation"]))
    for geo, pres in regimes:
        rr = [r for r in rows if r["geometry"] == geo and r["presentation"] == pres]
        unit = geo not in ("aniso-scale", "aniso-drift")  # unit keys: d* = 1/β · 1 (T5)
        idle = [r for r in rr if unit and r["beta"] == 1.0]
        active = [r for r in rr if r not in idle]
        helps = [r for r in active if _verdict(r) == "helps"]
        hurts = [r for r in active if _verdict(r) == "hurts"]
        s = [f"**{geo} / {pres}**: OSDN (η = {eta:g}, APF off)"]
        clause = ((f"helps at {_fmt_cases(helps)}" if helps else "helps nowhere")
                  + "; " + (f"hurts at {_fmt_cases(hurts)}" if hurts else "hurts nowhere"))
        n_same = len(active) - len(helps) - len(hurts)
        if n_same:
            clause += f"; no decided difference in the other {n_same} case(s)"
        if idle:
            gap = max(abs(r["mean"] - r["deltanet_mean"]) for r in idle)
            clause += (f"; at β = 1 it equals DeltaNet (max |Δ| = {gap:.1e}: with unit keys ρ_t(1) = 1 − β = 0, "
                       "so E8 never moves d)")
        s.append(clause + ".")
        if not active:
            out[f"{geo}/{pres}"] = " ".join(s)
            continue
        lo, hi = min(r["rho_last"] for r in active), max(r["rho_last"] for r in active)
        dlo, dhi = min(dn[k(r)]["rho_last"] for r in active), max(dn[k(r)]["rho_last"] for r in active)
        why = (f"Why: on the last pass OSDN's learner plays mean |ρ_t| = {lo:.2f}–{hi:.2f} against DeltaNet's "
               f"{dlo:.2f}–{dhi:.2f} ("
               + ("T5: a comparator exists, d* = 1/β · 1, so ρ_t falls" if unit else
                  "T5: a comparator exists, d* = 1/(βs²) per feature, so ρ_t falls" if geo == "aniso-scale" else
                  "T5 does not apply: the comparator jumps from 1/(βs²) to 1/(βs'²) halfway through each pass")
               + ")")
        if unit:
            why += (", i.e. it moves towards d* where its write β r (d* ⊙ k)ᵀ = r kᵀ is DeltaNet's at β = 1 "
                    "(T3: each token fitted exactly)")
            if helps:
                a = sum(r["deltanet_beta1"] < r["deltanet_mean"] for r in helps)
                why += (f"; in {a}/{len(helps)} of the cases where it helps, DeltaNet at β = 1 also beats "
                        "DeltaNet at β")
            if hurts:
                a = sum(r["deltanet_beta1"] > r["deltanet_mean"] for r in hurts)
                why += (f"; in {a}/{len(hurts)} of the cases where it hurts, DeltaNet at β = 1 is also worse "
                        "than at β")
        if hurts:
            fit = sum(r["rho_last"] < dn[k(r)]["rho_last"] for r in hurts)
            why += (f"; where it hurts (N/K = {_loads(hurts)}) it still fits its own tokens better in "
                    f"{fit}/{len(hurts)} cases (lower |ρ_t|, T3), so the loss is interference with the other "
                    "stored keys, which the state-free feedback (D3) does not see")
        if helps:
            why += f"; the gains are at N/K = {_loads(helps)}"
        s.append(why + ".")
        gain = [r for r in helps if k(r) in apf_rows]
        loss = [r for r in hurts if k(r) in apf_rows]
        parts = []
        if loss:
            rec = np.mean([(r["mean"] - apf_rows[k(r)]["mean"]) / (r["mean"] - r["deltanet_mean"])
                           for r in loss])
            parts.append(f"recovers {100 * rec:.0f}% of the loss where OSDN hurts")
        if gain:
            gb = np.mean([(apf_rows[k(r)]["mean"] - r["mean"]) / (r["deltanet_mean"] - r["mean"])
                          for r in gain])
            parts.append(f"gives back {100 * gb:.0f}% of the gain where it helps")
        if parts:
            s.append("APF (E1, α < 1 pulls d back to d°) " + " and ".join(parts) + ".")
        out[f"{geo}/{pres}"] = " ".join(s)
    return out


def eta_summary(records: List[dict]) -> List[dict]:
    """Across the whole grid (d_max = ∞, unit-key β = 1 cases excluded as idle), per OSDN head (η of E8,
    APF of E1): how many cases OSDN helps / hurts / ties, and the smallest, median and largest ratio of
    mean residual ratios OSDN/DeltaNet.

    Parameters
    ----------
    records : list of dict
        Output of :func:`run_grid`.

    Returns
    -------
    rows : list of dict with ``eta``, ``apf``, ``helps``, ``hurts``, ``same``, ``min``, ``median``, ``max``.
    """
    heads = sorted({(r["eta"], r["apf"]) for r in records if r["eta"] > 0})
    out = []
    for eta, apf in heads:
        rows = [r for r in summarize(records, eta=eta, apf=apf) if r["d_max"] is None
                and not (r["geometry"] not in ("aniso-scale", "aniso-drift") and r["beta"] == 1.0)]
        v = [_verdict(r) for r in rows]
        ratios = np.array([r["ratio"] for r in rows])
        out.append(dict(eta=eta, apf=apf, helps=v.count("helps"), hurts=v.count("hurts"), same=v.count("same"),
                        min=float(ratios.min()), median=float(np.median(ratios)), max=float(ratios.max())))
    return out


def _pm(m, s):
    return f"{m:.3f} ± {s:.3f}"


def _plot(records, cfg, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    geos, press = list(cfg.geometries), list(cfg.presentations)
    fig, axes = plt.subplots(len(geos), len(press), figsize=(2.3 * len(press), 1.9 * len(geos)),
                             sharex=True, sharey=True, squeeze=False)
    eta = 1.0 if 1.0 in cfg.etas else cfg.etas[0]
    colors = {b: c for b, c in zip(cfg.betas, ["tab:green", "tab:blue", "tab:orange", "tab:red"])}
    for i, geo in enumerate(geos):
        for j, pres in enumerate(press):
            ax = axes[i][j]
            for beta in cfg.betas:
                rr = [r for r in records if r["geometry"] == geo and r["presentation"] == pres
                      and r["beta"] == beta and r["eta"] == eta and not r["apf"] and r["d_max"] is None]
                if not rr:
                    continue
                x = [r["load"] for r in rr]
                ax.errorbar(x, [r["deltanet_mean"] for r in rr], [r["deltanet_std"] for r in rr],
                            color=colors[beta], lw=1, marker="o", ms=2.5, capsize=1.5,
                            label=f"DeltaNet β={beta:g}")
                ax.errorbar(x, [r["mean"] for r in rr], [r["std"] for r in rr], color=colors[beta],
                            lw=1, ls="--", marker="x", ms=3, capsize=1.5, label=f"OSDN η={eta:g} β={beta:g}")
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3, lw=0.5)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(pres, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{geo}\n‖V̂−V‖/‖V‖", fontsize=7)
            if i == len(geos) - 1:
                ax.set_xlabel("load N/K", fontsize=7)
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=max(1, len(lab)), fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(records: List[dict], cfg: RecallConfig, out: str, meta: dict) -> Dict[str, str]:
    """Write ``recall.json`` (every record), ``recall.md`` (the table and one sentence per regime,
    citing T3–T5) and ``recall.png`` under ``out``.

    Returns
    -------
    dict name -> path.
    """
    os.makedirs(out, exist_ok=True)
    paths = {n: os.path.join(out, f"recall.{n}") for n in ("json", "md", "png")}
    def _c(v):
        if isinstance(v, float):
            return float(f"{v:.6g}") if math.isfinite(v) else None
        if isinstance(v, list):
            return [_c(x) for x in v]
        return v

    clean = [{k: _c(v) for k, v in r.items()} for r in records]
    cfg_d = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in cfg.__dict__.items()
             if k != "heads"}
    cfg_d["head_grid"] = cfg.head_grid()
    with open(paths["json"], "w") as f:
        f.write("{\n")
        f.write(f'"meta": {json.dumps(meta)},\n"config": {json.dumps(cfg_d)},\n"records": [\n')
        f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in clean))
        f.write("\n]\n}\n")
    try:
        _plot(records, cfg, paths["png"])
    except ImportError as exc:  # pragma: no cover - matplotlib missing: keep the numbers
        print(f"osdn recall: no plot ({exc})", file=sys.stderr)

    eta_main = 1.0 if 1.0 in cfg.etas else cfg.etas[0]
    sentences = regime_sentences(records, eta=eta_main)
    L = []
    L.append("# Recall in miniature: OSDN against DeltaNet (issue 5, mechanism part)\n")
    L.append(f"Generated by `{meta['command']}` in {meta['runtime_s']:.1f} s "
             f"(backend `{meta['backend']}`, {meta['device']}). Every number below comes from that run; "
             "`recall.json` has every seed.\n")
    L.append("## What is measured\n")
    L.append(
        f"N = load·K key–value pairs (K = {cfg.K}, V = {cfg.V}, v ~ N(0, I/V)) are written by the "
        "recurrence E1–E8 (" + ("float64 reference `recurrent_osdn`" if meta["backend"] == "reference" else
                                 "float32 `osdn_fast.chunk_osdn`, C1–C3") + ", zero initial state, g = 0, d° = 1, "
        "d_min = 0) and read back with the final state, V̂_i = S_T k_i; the table gives the recall "
        "residual ratio ‖V̂ − V‖_F / ‖V‖_F, mean ± std (ddof 1) over seeds "
        f"{list(cfg.seeds)}. DeltaNet is η = 0 (spec §2 special case) on the same streams. "
        "For `update` the target is each key's latest value.\n")
    L.append(
        "- Geometries: `iso` unit Gaussian directions; `aniso-dir` k = (s⊙z)/‖s⊙z‖, s log-uniform on "
        f"[{cfg.s_min}, 1] (unit keys: anisotropy only in the direction distribution); `aniso-scale` "
        f"k = s⊙z/‖z‖ (non-unit keys with ‖k‖ ≤ 1, so β‖k‖² ≤ 1 and DeltaNet cannot diverge; comparator "
        f"d* = 1/(βs²)); `aniso-drift` as `aniso-scale` but the second half of the keys uses a fresh "
        f"permutation s' of the scales (the comparator drifts within every pass); `corr` k ∝ √(1−c) z/√K + √c μ, one shared direction μ, c = {cfg.corr}.\n"
        "- Presentations: `once`; `jrtR`: the same pairs in the same order R times (JRT-style); "
        "`update`: the keys twice, each pass in a fresh order with fresh values.\n"
        f"- APF: constant α = 1 − 1/({cfg.apf_window:g}K) = {1 - 1 / (cfg.apf_window * cfg.K):.4f} "
        "(forgetting horizon of two memory widths); off is α = 1.\n"
        f"- Clip: d_max = ∞, and for {', '.join(cfg.clip_geometries) or 'none'} also d_max = {cfg.clip:g}.\n")
    # clip effect
    by = {_key(r): r for r in records}
    cd = [(abs(r["mean"] - by[_key(r)[:-1] + (None,)]["mean"]), r) for r in records
          if r["d_max"] is not None and _key(r)[:-1] + (None,) in by]
    if cd:
        m, r = max(cd, key=lambda x: x[0])
        n_big = sum(x[0] >= 0.01 for x in cd)
        L.append(f"Clip d_max = {cfg.clip:g} (E2): the largest change of a mean residual ratio it causes is "
                 f"{m:.4f} ({r['geometry']}/{r['presentation']}, N/K={r['load']:g}, β={r['beta']:g}, "
                 f"η={r['eta']:g}, APF {'on' if r['apf'] else 'off'}); {n_big} of {len(cd)} clipped runs move "
                 "by ≥ 0.01. The clip binds only on the longest streams, where d approaches "
                 "d* = 1/(βs²) ≫ 10 on weak features; the clip rows are in the full grid below.\n")
    L.append("## Headline (η = 1, APF off, d_max = ∞)\n")
    L.append("Per regime: the case where OSDN helps most and the one where it hurts most "
             "(mean ± std over seeds of the recall residual ratio, DeltaNet → OSDN; in parentheses the "
             "per-seed ratio OSDN/DeltaNet on the same stream, mean ± std over seeds).\n")
    L.append("| regime | helps / hurts / no decided difference | best for OSDN | worst for OSDN |")
    L.append("|---|---|---|---|")
    main_rows = [r for r in summarize(records, eta=eta_main) if r["d_max"] is None]
    for reg in sentences:
        geo, pres = reg.split("/")
        rr = [r for r in main_rows if r["geometry"] == geo and r["presentation"] == pres]
        lo, hi = min(rr, key=lambda r: r["ratio"]), max(rr, key=lambda r: r["ratio"])
        act = [r for r in rr if not (geo not in ("aniso-scale", "aniso-drift") and r["beta"] == 1.0)]
        vd = [_verdict(r) for r in act]
        counts = f"{vd.count('helps')} / {vd.count('hurts')} / {vd.count('same')}"
        if len(act) < len(rr):
            counts += f" (+{len(rr) - len(act)} idle at β = 1)"
        f = lambda r: (f"N/K={r['load']:g} β={r['beta']:g}: {_pm(r['deltanet_mean'], r['deltanet_std'])} → "  # noqa: E731
                       f"{_pm(r['mean'], r['std'])} (×{r['seed_ratio_mean']:.2f} ± {r['seed_ratio_std']:.2f})")
        L.append(f"| {reg} | {counts} | {f(lo)} | {f(hi)} |")
    L.append("")
    L.append("## Every OSDN head over the whole grid\n")
    L.append("Cases = (regime, N/K, β) with d_max = ∞, unit-key β = 1 excluded (idle learner). Ratio = OSDN mean / "
             "DeltaNet mean residual ratio.\n")
    L.append("| η | APF | helps | hurts | no decided difference | min ratio | median ratio | max ratio |")
    L.append("|---|---|---|---|---|---|---|---|")
    for e in eta_summary(records):
        L.append(f"| {e['eta']:g} | {'on' if e['apf'] else 'off'} | {e['helps']} | {e['hurts']} | {e['same']} | "
                 f"{e['min']:.3f} | {e['median']:.3f} | {e['max']:.3f} |")
    L.append("")
    if meta.get("fast_vs_reference") is not None:
        fv = meta["fast_vs_reference"]
        L.append("## Kernel against reference\n")
        L.append(f"The same grid run through `osdn_fast.chunk_osdn` (float32, {fv['device']}) gives recall "
                 f"residual ratios within {fv['max_abs_diff_seed_ratio']:.2e} (max abs, over every seed and "
                 f"head of {fv['n_records']} records) of the float64 reference; max |Δ| of a final d entry "
                 f"mean: {fv['max_abs_diff_d_final']:.2e}.\n")
    L.append("## Why, in terms of T3–T5 (derived here; the paper's text was not available)\n")
    L.append(
        "- T3/D5: after its write, token t's residual is ρ_t(p_t) r_t. DeltaNet plays p = 1, so with unit "
        "keys ρ_t = 1 − β; OSDN's learner (E8) moves d to make ρ_t → 0.\n"
        "- Unit keys (`iso`, `aniso-dir`, `corr`): d* = 1/β · 1 satisfies β⟨k_t², d*⟩ = 1 for every key, "
        "so a right-Newton comparator always exists (T5) and Σρ_t² ≤ ‖d_0 − d*‖²/(η(2 − η)) = "
        "K(1/β − 1)²/(η(2 − η)). At d = d*, the write β r (d* ⊙ k)ᵀ = r kᵀ is exactly DeltaNet at β = 1. "
        "So with unit keys OSDN at β < 1 can at best become DeltaNet at β = 1 — a choice DeltaNet can make "
        "by itself — and its learner gets there slowly: E8 moves each feature by η ρ_t β k_t²/‖k_t‖², "
        "O(ηβ/K) per token, so at β = 0.1 it barely moves and at β = 1 it is idle (ρ = 0).\n"
        "- Whether β → 1 helps recall is not a token-local question: writing each token fully is best when "
        "the memory is under-loaded and the keys are revisited (JRT, low N/K: Kaczmarz-like sweeps converge "
        "faster at full step), and worst when N/K ≳ 1 or keys are correlated, where full writes erase "
        "the other stored keys and a smaller β averages. The feedback h_t(d) is state-free (D3): it never "
        "sees that interference, so OSDN cannot tell the two situations apart.\n"
        "- Non-unit keys (`aniso-scale`, `aniso-drift`): DeltaNet's ρ_t = 1 − β‖k_t‖² stays large even at β = 1 and the "
        "comparator d* = 1/(βs²) is per feature — the case a diagonal preconditioner targets, and one no "
        "choice of β reproduces. (T5 is stated for unit keys; its one-step inequality "
        "‖e_t‖² ≤ ‖e_{t−1}‖² − ρ_t²(2η/‖k_t‖² − η²β²) still gives the same bound when ‖k_t‖ ≤ 1, β ≤ 1 — "
        "derived here, not in the spec.) Interference with the other stored keys is again invisible to D3.\n"
        "- APF (E1) with a constant α pulls d back to d° = 1. The feedback depends on the keys only, not on "
        "the values (D3), so `update` does not move the comparator; only `aniso-drift` does (the per-feature "
        "scales change halfway through each pass), which is where T4's dynamic-regret argument gives APF "
        "something to track. What APF does to recall is measured per regime below.\n")
    L.append("## One sentence per regime\n")
    L.append("\"helps\"/\"hurts\": the paired per-seed difference OSDN − DeltaNet exceeds 2 standard "
             "errors and the ratio of means differs from 1 by more than 1%. In parentheses: the per-seed "
             "ratio OSDN/DeltaNet of residual ratios on the same stream, mean ± std over seeds.\n")
    for reg, s in sentences.items():
        L.append(f"- {s}")
    L.append("")
    L.append(f"## Table (η = {eta_main:g}; APF off and on; d_max = ∞)\n")
    L.append("Ratio = OSDN mean / DeltaNet mean (< 1: OSDN recalls better). `DN β=1` is DeltaNet at β = 1 "
             "on the same streams, the limit OSDN approaches with unit keys; the last column is the learner's "
             "mean |ρ_t(d̄_{t−1})| (E7) over the last pass (DeltaNet: |1 − β| for unit keys).\n")
    L.append("| regime | N/K | β | η | APF | DeltaNet | OSDN | ratio | verdict | DN β=1 | OSDN mean abs ρ, last pass |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = sorted([r for a in (False, True) for r in summarize(records, eta=eta_main, apf=a)
                   if r["d_max"] is None],
                  key=lambda r: (cfg.geometries.index(r["geometry"]),
                                 cfg.presentations.index(r["presentation"]), r["load"], r["beta"], r["apf"]))
    for r in rows:
        L.append(f"| {r['geometry']}/{r['presentation']} | {r['load']:g} | {r['beta']:g} | {r['eta']:g} | "
                 f"{'on' if r['apf'] else 'off'} | {_pm(r['deltanet_mean'], r['deltanet_std'])} | "
                 f"{_pm(r['mean'], r['std'])} | {r['ratio']:.3f} | {_verdict(r)} | "
                 f"{r['deltanet_beta1']:.3f} | {r['rho_last']:.3f} |")
    L.append("")
    L.append("## Full grid (every η, APF, clip)\n")
    L.append("DeltaNet's numbers for each (regime, N/K, β) are in the table above; `recall.json` has every seed.\n")
    L.append("<details><summary>all OSDN records</summary>\n")
    L.append("| regime | N/K | β | η | APF | d_max | OSDN | ratio | mean abs ρ, last pass |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        if r["eta"] == 0.0:
            continue
        L.append(f"| {r['geometry']}/{r['presentation']} | {r['load']:g} | {r['beta']:g} | {r['eta']:g} | "
                 f"{'on' if r['apf'] else 'off'} | {'∞' if r['d_max'] is None else format(r['d_max'], 'g')} | "
                 f"{_pm(r['mean'], r['std'])} | {r['mean'] / r['deltanet_mean']:.3f} | {r['rho_last']:.3f} |")
    L.append("\n</details>\n")
    if meta.get("fast_vs_reference") is None:
        L.append("## Not done\n")
        L.append("- Kernel agreement is not part of this run (backend `reference` only). `osdn recall --backend both` "
                 "runs the same grid through `osdn_fast.chunk_osdn` (spec §6; on a GPU when there is one) and "
                 "adds the comparison here; tests/test_recall.py checks the agreement at a tiny size in the "
                 "Triton interpreter on the CPU.")
    with open(paths["md"], "w") as f:
        f.write("\n".join(L))
    return paths


# ----------------------------------------------------------------------------------------------
# Command line


def _parse_seeds(s: str) -> List[int]:
    if "," in s:
        return [int(x) for x in s.split(",") if x.strip()]
    return list(range(int(s)))


def main(argv: Optional[List[str]] = None) -> int:
    """``osdn recall``: run the grid (E1–E8 via the chosen backend) and write reports/recall.{md,json,png}
    with one sentence per regime in terms of T3–T5."""
    ap = argparse.ArgumentParser(prog="osdn recall",
                                 description="associative recall residuals, OSDN vs DeltaNet (mechanism)")
    ap.add_argument("--seeds", default=None, help="number of seeds (0..n-1) or a comma list; default 8 (quick: 2)")
    ap.add_argument("--quick", action="store_true", help="a small grid for tests (seconds)")
    ap.add_argument("--out", default="reports", help="output folder (default reports/)")
    ap.add_argument("--backend", default="reference", choices=("reference", "fast", "both"),
                    help="reference: float64 NumPy recurrence on the CPU; fast: osdn_fast.chunk_osdn "
                         "(GPU kernel, must be importable); both: run both and report their difference")
    ap.add_argument("--K", type=int, default=None, help="key width (default 32; quick: 16)")
    ns = ap.parse_args([] if argv is None else list(argv))
    if ns.quick:
        cfg = RecallConfig(K=16, V=8, seeds=(0, 1), loads=(0.5, 2.0), betas=(0.5, 1.0), etas=(1.0,),
                           presentations=("once", "jrt2", "update"))
    else:
        cfg = RecallConfig(presentations=("once", "jrt2", "jrt4", "jrt8", "update"),
                           seeds=tuple(range(8)))
    if ns.seeds is not None:
        cfg.seeds = tuple(_parse_seeds(ns.seeds))
    if ns.K is not None:
        cfg.K = ns.K
    if ns.backend in ("fast", "both"):
        try:
            _fast_chunk_osdn()
        except RuntimeError as exc:
            print(f"osdn recall: {exc}", file=sys.stderr)
            return 2
    cfg.backend = "reference" if ns.backend == "both" else ns.backend
    command = "osdn recall " + " ".join(argv or [])
    t0 = time.perf_counter()
    print(f"osdn recall: {len(cfg.geometries)} geometries × {len(cfg.presentations)} presentations × "
          f"{len(cfg.loads)} loads, seeds {list(cfg.seeds)}, backend {cfg.backend}")
    records = run_grid(cfg)
    if cfg.backend == "reference":
        device = "CPU, float64 NumPy reference"
    else:
        import torch

        device = ("osdn_fast.chunk_osdn on " + (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                                else "the CPU (Triton interpreter)"))
    meta = dict(command=command.strip(), backend=cfg.backend, device=device)
    if ns.backend == "both":
        import torch

        cfg_fast = RecallConfig(**{k: v for k, v in cfg.__dict__.items() if k != "heads"})
        cfg_fast.backend = "fast"
        t1 = time.perf_counter()
        fast = {_key(r): r for r in run_grid(cfg_fast, log=lambda *a: None)}
        ds = [abs(a - b) for r in records if _key(r) in fast
              for a, b in zip(fast[_key(r)]["seeds"], r["seeds"])]
        dd = [abs(fast[_key(r)]["d_final"] - r["d_final"]) for r in records if _key(r) in fast]
        meta["fast_vs_reference"] = dict(
            device=(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU, Triton interpreter"),
            n_records=len(dd), max_abs_diff_seed_ratio=max(ds), max_abs_diff_d_final=max(dd),
            runtime_s=time.perf_counter() - t1)
        print(f"fast vs reference: max |Δ residual ratio| = {max(ds):.3e}, max |Δ mean d_T| = {max(dd):.3e} "
              f"({meta['fast_vs_reference']['device']})")
    meta["runtime_s"] = time.perf_counter() - t0
    paths = write_reports(records, cfg, ns.out, meta)
    print(f"wrote {', '.join(paths.values())} in {meta['runtime_s']:.1f} s")
    return 0
