"""``osdn mqar``: multi-query associative recall (MQAR) in small trained models, OSDN against the same layer
with η = 0 (issue 5, model part).

Task (Zoology-style, Arora et al. 2023): a context of N key–value token pairs k₁ v₁ … k_N v_N, then a
query region in which every key appears once more, at a random slot, followed by its value; the model is
trained and scored only at the query keys, where it must predict the paired value. JRT-style repetition
(Arora et al. 2024, "Just read twice") presents the context R times before the queries. Keys come from
[1, vocab/2), values from [vocab/2, vocab), token 0 pads.

Models: embedding → 2 × (RMSNorm → :class:`~osdn_fast.layers.OSDNAttention` → residual, RMSNorm → GLU MLP
→ residual) → RMSNorm → tied LM head. The two arms differ only in the hyper step of E8: ``osdn`` learns
η = softplus(η_raw) per head (initial 1), ``eta0`` fixes η = 0 (the learner E8 is off, d stays at the
learnable prior d°, spec §2). Same width, seeds, data and number of steps. The recurrence runs in
``osdn_fast.chunk_osdn`` (Triton; in the interpreter on a CPU, tiny shapes only).

What is derived here and what is the paper's: the paper reports +32% JRT-style recall over DeltaNet at
340M parameters; nothing here is at that scale, and this module makes no claim beyond its own numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import OSDNAttention

__all__ = ["make_mqar", "MQARModel", "MQARConfig", "train_run", "summarize", "write_reports", "main"]

IGNORE = -100


# ----------------------------------------------------------------------------------------------
# Task


def make_mqar(n_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int, jrt_repeats: int = 1,
              seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Generate MQAR examples (the recall task the OSDN write E5 and learner E8 are meant to serve).

    Parameters
    ----------
    n_examples : int
    seq_len : int
        Length without repetition: 2N context tokens plus a query region of seq_len − 2N ≥ 2N tokens.
    num_kv_pairs : int
        N distinct keys per example (N < vocab/2 − 1).
    vocab_size : int
        Keys in [1, vocab/2), values in [vocab/2, vocab), 0 pads.
    jrt_repeats : int
        R: the context is presented R times (JRT-style); the input length is seq_len + 2N(R − 1).
    seed : int

    Returns
    -------
    inputs : int64 [n_examples, seq_len + 2N(R − 1)]
    labels : int64, same shape: the value at each query key's position, −100 elsewhere (N labels per row).
    """
    N, R = int(num_kv_pairs), int(jrt_repeats)
    half = vocab_size // 2
    if N < 1 or N > half - 1:
        raise ValueError(f"num_kv_pairs: expected 1 ≤ N ≤ {half - 1} for vocab_size {vocab_size}, got {N}")
    if seq_len < 4 * N:
        raise ValueError(f"seq_len: expected ≥ 4·num_kv_pairs = {4 * N} (context 2N plus 2N query tokens), "
                         f"got {seq_len}")
    if R < 1:
        raise ValueError(f"jrt_repeats: expected ≥ 1, got {R}")
    rng = np.random.default_rng(seed)
    keys = np.argsort(rng.random((n_examples, half - 1)), axis=1)[:, :N] + 1  # distinct keys
    vals = rng.integers(half, vocab_size, size=(n_examples, N))
    ctx = np.empty((n_examples, 2 * N), dtype=np.int64)
    ctx[:, 0::2], ctx[:, 1::2] = keys, vals
    n_slots = (seq_len - 2 * N) // 2
    slots = np.argsort(rng.random((n_examples, n_slots)), axis=1)[:, :N]  # query slot of key i
    order = rng.permuted(np.tile(np.arange(N), (n_examples, 1)), axis=1)  # which key goes to which slot
    q = np.zeros((n_examples, seq_len - 2 * N), dtype=np.int64)
    ql = np.full_like(q, IGNORE)
    rows = np.arange(n_examples)[:, None]
    kq, vq = np.take_along_axis(keys, order, 1), np.take_along_axis(vals, order, 1)
    q[rows, 2 * slots], q[rows, 2 * slots + 1] = kq, vq
    ql[rows, 2 * slots] = vq
    inputs = np.concatenate([np.tile(ctx, (1, R)), q], axis=1)
    labels = np.concatenate([np.full((n_examples, 2 * N * R), IGNORE, dtype=np.int64), ql], axis=1)
    return inputs, labels


# ----------------------------------------------------------------------------------------------
# Model


class _RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class _Block(nn.Module):
    def __init__(self, d: int, mixer: nn.Module, mlp_ratio: float):
        super().__init__()
        h = int(d * mlp_ratio)
        self.n1, self.mixer, self.n2 = _RMSNorm(d), mixer, _RMSNorm(d)
        self.up, self.gate, self.down = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)

    def forward(self, x):
        x = x + self.mixer(self.n1(x))[0]
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class MQARModel(nn.Module):
    """A small language model whose token mixers are :class:`OSDNAttention` (E1–E8 via chunk_osdn).

    Parameters
    ----------
    vocab_size, d_model, num_layers, num_heads : int
    eta_init : float
        η of E8 at initialisation; 0 fixes η = 0 (the ablation arm).
    use_apf : bool
        APF gate α (E1) in every layer.
    mlp_ratio : float
    chunk_size : int
        C of C1–C3.

    Shapes: ``forward(tokens [B, T]) -> logits [B, T, vocab_size]``.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, num_layers: int = 2, num_heads: int = 2,
                 eta_init: float = 1.0, use_apf: bool = False, mlp_ratio: float = 2.0, chunk_size: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList([
            _Block(d_model, OSDNAttention(hidden_size=d_model, num_heads=num_heads, eta_init=eta_init,
                                          use_apf=use_apf, chunk_size=chunk_size), mlp_ratio)
            for _ in range(num_layers)])
        self.norm = _RMSNorm(d_model)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.embed.weight.T

    def etas(self) -> List[List[float]]:
        """η per layer and head (E8)."""
        return [[float(e) for e in b.mixer.eta.detach().cpu()] for b in self.blocks]


# ----------------------------------------------------------------------------------------------
# Training


@dataclass
class MQARConfig:
    """One MQAR study: the task grid, the model, the optimiser and the arms (E8: η learnt or 0)."""

    vocab_size: int = 256
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 2
    mlp_ratio: float = 2.0
    chunk_size: int = 64
    train_configs: Sequence[Tuple[int, int]] = ((64, 4), (64, 8), (128, 8), (128, 16), (256, 16), (256, 32))
    eval_configs: Sequence[Tuple[int, int]] = ((64, 4), (64, 8), (64, 16), (128, 8), (128, 16), (128, 32),
                                               (256, 16), (256, 32), (256, 64), (512, 16), (512, 32),
                                               (512, 64))
    jrt: Sequence[int] = (1, 2)
    arms: Sequence[str] = ("osdn", "eta0")
    seeds: Sequence[int] = (0, 1, 2)
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: float = 0.1
    eval_examples: int = 256
    eval_batch: int = 128
    device: str = "cuda"
    budget_s: Optional[float] = None
    extra: Dict[str, float] = field(default_factory=dict)


ARMS = {"osdn": dict(eta_init=1.0, use_apf=False), "eta0": dict(eta_init=0.0, use_apf=False),
        "osdn-apf": dict(eta_init=1.0, use_apf=True)}


def _param_groups(model, wd):
    decay, no = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "d_prior" not in n and "embed" not in n else no).append(p)
    return [dict(params=decay, weight_decay=wd), dict(params=no, weight_decay=0.0)]


def _lr(step, steps, lr, warmup):
    w = max(1, int(warmup * steps))
    if step < w:
        return lr * (step + 1) / w
    return lr * 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


@torch.no_grad()
def evaluate(model, cfg: MQARConfig, jrt: int) -> Dict[str, float]:
    """Accuracy at the query keys for every eval (seq_len, N), on fixed eval sets (seed independent of the run).

    Returns
    -------
    dict "T=…,N=…" -> accuracy in [0, 1].
    """
    model.eval()
    out = {}
    for i, (T, N) in enumerate(cfg.eval_configs):
        x, y = make_mqar(cfg.eval_examples, T, N, cfg.vocab_size, jrt, seed=10_000 + i)
        correct = total = 0
        for s in range(0, len(x), cfg.eval_batch):
            xb = torch.as_tensor(x[s:s + cfg.eval_batch], device=cfg.device)
            yb = torch.as_tensor(y[s:s + cfg.eval_batch], device=cfg.device)
            pred = model(xb).argmax(-1)
            m = yb != IGNORE
            correct += int((pred[m] == yb[m]).sum())
            total += int(m.sum())
        out[f"T={T},N={N}"] = correct / total
    model.train()
    return out


def train_run(cfg: MQARConfig, arm: str, seed: int, jrt: int, steps: Optional[int] = None,
              log=print) -> dict:
    """Train one model (arm, seed, JRT repeats) for ``steps`` AdamW steps and evaluate it.

    The training data are a fresh MQAR batch per step, its (seq_len, N) drawn from ``cfg.train_configs``;
    data and initialisation depend on (seed, jrt) only, so both arms see the same batches.

    Returns
    -------
    dict with ``arm``, ``seed``, ``jrt``, ``steps``, ``acc`` (eval accuracy per config), ``loss_curve``
    (mean training loss per 5% of the steps), ``final_loss``, ``eta`` (learnt η per layer and head, E8),
    ``train_s`` and ``eval_s``.
    """
    steps = cfg.steps if steps is None else steps
    torch.manual_seed(seed)
    model = MQARModel(cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                      chunk_size=cfg.chunk_size, **ARMS[arm]).to(cfg.device)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    rng = np.random.default_rng([seed, jrt])
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        T, N = cfg.train_configs[rng.integers(len(cfg.train_configs))]
        x, y = make_mqar(cfg.batch_size, T, N, cfg.vocab_size, jrt, seed=int(rng.integers(2**62)))
        x, y = torch.as_tensor(x, device=cfg.device), torch.as_tensor(y, device=cfg.device)
        for gr in opt.param_groups:
            gr["lr"] = _lr(step, steps, cfg.lr, cfg.warmup)
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()) if (step % 10 == 0 or step == steps - 1) else None)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    acc = evaluate(model, cfg, jrt)
    eval_s = time.perf_counter() - t1
    ls = [v for v in losses if v is not None]
    k = max(1, len(ls) // 20)
    curve = [float(np.mean(ls[i:i + k])) for i in range(0, len(ls), k)]
    res = dict(arm=arm, seed=seed, jrt=jrt, steps=steps, acc=acc, loss_curve=curve, final_loss=ls[-1],
               eta=model.etas(), train_s=train_s, eval_s=eval_s,
               n_params=sum(p.numel() for p in model.parameters()))
    log(f"  {arm:8s} seed={seed} jrt={jrt} steps={steps} loss={ls[-1]:.3f} "
        f"mean acc={np.mean(list(acc.values())):.3f} train {train_s:.1f}s eval {eval_s:.1f}s")
    return res


def _calibrate(cfg: MQARConfig, n_runs: int, t_start: float, log=print) -> int:
    """Steps per run that fit ``cfg.budget_s`` (measured step time after a compile warm-up), same for all runs."""
    torch.manual_seed(0)
    model = MQARModel(cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                      chunk_size=cfg.chunk_size, **ARMS[cfg.arms[0]]).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(123)
    Rmax = max(cfg.jrt)

    def step(T, N, R):
        x, y = make_mqar(cfg.batch_size, T, N, cfg.vocab_size, R, seed=int(rng.integers(2**62)))
        x, y = torch.as_tensor(x, device=cfg.device), torch.as_tensor(y, device=cfg.device)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for T, N in cfg.train_configs[:2]:
        step(T, N, Rmax)  # compile
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = 3 * len(cfg.train_configs)
    for i in range(n):
        T, N = cfg.train_configs[i % len(cfg.train_configs)]
        step(T, N, cfg.jrt[i % len(cfg.jrt)])
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / n
    t = time.perf_counter()
    evaluate(model, cfg, Rmax)
    eval_s = time.perf_counter() - t
    left = cfg.budget_s - (time.perf_counter() - t_start) - n_runs * (eval_s + 2.0) - 10.0
    steps = int(min(cfg.steps, max(10, left / (n_runs * per_step * 1.1))))
    log(f"calibration: {per_step * 1e3:.1f} ms/step, eval {eval_s:.1f} s/run, {n_runs} runs, "
        f"{left:.0f} s left for training -> {steps} steps per run")
    cfg.extra.update(ms_per_step=per_step * 1e3, eval_s=eval_s)
    return steps


# ----------------------------------------------------------------------------------------------
# Reports


def summarize(results: List[dict]) -> List[dict]:
    """Per (JRT, eval config): accuracy mean ± std over seeds per arm and the paired difference osdn − eta0
    (the learner E8 on, against η = 0 where d stays at d°, E1).

    Returns
    -------
    rows : list of dict with ``jrt``, ``config``, per-arm ``mean``/``std``/``n`` and ``diff_mean``,
    ``diff_std``, ``diff_n`` (seeds present for both arms).
    """
    rows = []
    jrts = sorted({r["jrt"] for r in results})
    arms = list(dict.fromkeys(r["arm"] for r in results))
    configs = list(dict.fromkeys(c for r in results for c in r["acc"]))
    for j in jrts:
        for c in configs:
            row = dict(jrt=j, config=c)
            per = {}
            for a in arms:
                v = {r["seed"]: r["acc"][c] for r in results if r["arm"] == a and r["jrt"] == j}
                per[a] = v
                vals = np.array(list(v.values()))
                row[a] = dict(mean=float(vals.mean()) if len(vals) else float("nan"),
                              std=float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"), n=len(vals))
            if "osdn" in per and "eta0" in per:
                common = sorted(set(per["osdn"]) & set(per["eta0"]))
                d = np.array([per["osdn"][s] - per["eta0"][s] for s in common])
                row.update(diff_mean=float(d.mean()) if len(d) else float("nan"),
                           diff_std=float(d.std(ddof=1)) if len(d) > 1 else float("nan"), diff_n=len(d))
            rows.append(row)
    return rows


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jrts = sorted({r["jrt"] for r in rows})
    arms = [a for a in ("osdn", "eta0", "osdn-apf") if a in rows[0]]
    Ts = sorted({int(r["config"].split(",")[0][2:]) for r in rows})
    fig, axes = plt.subplots(1, len(jrts), figsize=(5 * len(jrts), 3.6), squeeze=False, sharey=True)
    colors = dict(zip(Ts, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))
    for ax, j in zip(axes[0], jrts):
        for T in Ts:
            rr = [r for r in rows if r["jrt"] == j and r["config"].startswith(f"T={T},")]
            Ns = [int(r["config"].split("N=")[1]) for r in rr]
            for a, ls in zip(arms, ("-", "--", ":")):
                ax.errorbar(Ns, [r[a]["mean"] for r in rr], [0 if math.isnan(r[a]["std"]) else r[a]["std"] for r in rr],
                            color=colors[T], ls=ls, marker="o" if a == "osdn" else "x", ms=4, capsize=2,
                            label=f"{a} T={T}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of key–value pairs N")
        ax.set_title(f"context presented {j}×" + (" (JRT)" if j > 1 else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR accuracy (mean ± std over seeds)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(results: List[dict], cfg: MQARConfig, out: str, meta: dict) -> Dict[str, str]:
    """Write ``mqar.json`` (every run), ``mqar.md`` (accuracy table, paired differences osdn − eta0, the
    learnt η of E8 per head, commands) and ``mqar.png`` under ``out``.

    Returns
    -------
    dict name -> path.
    """
    os.makedirs(out, exist_ok=True)
    paths = {n: os.path.join(out, f"mqar.{n}") for n in ("json", "md", "png")}
    rows = summarize(results)
    with open(paths["json"], "w") as f:
        json.dump(dict(meta=meta, config=asdict(cfg), runs=results, summary=rows), f, indent=1)
    if rows:
        try:
            _plot(rows, paths["png"])
        except ImportError as exc:  # pragma: no cover - matplotlib missing: keep the numbers
            print(f"osdn mqar: no plot ({exc})", file=sys.stderr)
    L = ["# MQAR in small trained models: OSDN against the same layer with η = 0 (issue 5, model part)\n"]
    L.append(f"Command: `{meta['command']}` — {meta['device']}, torch {meta['torch']}, "
             f"{meta['wall_s']:.0f} s wall. {len(results)} of {meta['planned_runs']} planned runs finished"
             + (" (stopped early; the table holds the finished ones)" if len(results) < meta["planned_runs"] else "")
             + ". Every number below comes from that run; `mqar.json` has every run.\n")
    L.append(
        f"Task: Zoology-style MQAR, vocab {cfg.vocab_size} (keys below {cfg.vocab_size // 2}, values above), "
        "N distinct keys per example; context k₁v₁…k_Nv_N, then every key once more at a random slot of the "
        "query region followed by its value; loss and accuracy at the query keys only. JRT: the context is "
        "presented R times before the queries. Training draws a fresh batch per step with (T, N) from "
        f"{list(map(tuple, cfg.train_configs))}; evaluation: {cfg.eval_examples} fixed examples per (T, N).\n")
    n_par = results[0]["n_params"] if results else 0
    L.append(
        f"Models: {cfg.num_layers} layers, d_model {cfg.d_model}, {cfg.num_heads} heads (K = V = "
        f"{cfg.d_model // cfg.num_heads}), short conv 4, GLU MLP ×{cfg.mlp_ratio:g}, tied embeddings, "
        f"{n_par:,} parameters. Arms: `osdn` — η per head learnt through softplus (initial 1, E8), APF off; "
        "`eta0` — the same layer with η fixed at 0 (E8 off: d stays at the learnable prior d°). Both learn β "
        f"(sigmoid), d° and everything else. AdamW lr {cfg.lr:g}, wd {cfg.weight_decay:g}, batch "
        f"{cfg.batch_size}, {results[0]['steps'] if results else cfg.steps} steps per run "
        f"(warm-up {cfg.warmup:.0%}, cosine), seeds {list(cfg.seeds)}; the same data per (seed, JRT) "
        "for both arms.\n")
    if cfg.budget_s is not None and cfg.extra:
        L.append(f"Steps per run were set once, for every run alike, from a measured {cfg.extra['ms_per_step']:.1f} ms "
                 f"per training step and {cfg.extra['eval_s']:.1f} s per evaluation, to fit a wall budget of "
                 f"{cfg.budget_s / 60:g} min (`--budget-min`).\n")
    L.append("## Accuracy at the query keys (mean ± std over seeds)\n")
    arms = list(dict.fromkeys(r["arm"] for r in results))
    head = "| JRT | T | N | " + " | ".join(arms) + (" | osdn − eta0 (paired) |" if "eta0" in arms and "osdn" in arms
                                                    else " |")
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        T, N = r["config"].replace("T=", "").replace("N=", "").split(",")
        cells = [f"{r[a]['mean']:.3f} ± {r[a]['std']:.3f}" if r[a]["n"] > 1 else f"{r[a]['mean']:.3f}"
                 for a in arms]
        d = (f" {r['diff_mean']:+.3f} ± {r['diff_std']:.3f} (n={r['diff_n']}) |" if "diff_mean" in r else "")
        L.append(f"| {r['jrt']}× | {T} | {N} | " + " | ".join(cells) + " |" + d)
    L.append("")
    if "diff_mean" in (rows[0] if rows else {}):
        L.append("## Summary\n")
        for j in sorted({r["jrt"] for r in rows}):
            rj = [r for r in rows if r["jrt"] == j]
            per_seed = {}
            for res in results:
                if res["jrt"] == j:
                    per_seed.setdefault(res["seed"], {})[res["arm"]] = np.mean(list(res["acc"].values()))
            d = np.array([v["osdn"] - v["eta0"] for v in per_seed.values() if "osdn" in v and "eta0" in v])
            if not len(d):
                continue
            better = sum(r["diff_mean"] > 0 for r in rj if not math.isnan(r["diff_mean"]))
            worse = sum(r["diff_mean"] < 0 for r in rj if not math.isnan(r["diff_mean"]))
            sd = f" ± {d.std(ddof=1):.3f}" if len(d) > 1 else ""
            L.append(f"- Context ×{j}: mean accuracy over the eval grid, osdn − eta0 = "
                     f"{d.mean():+.3f}{sd} (per-seed paired, {len(d)} seeds); osdn higher in {better}, lower in "
                     f"{worse} of {len(rj)} (T, N) cells.")
        jr = [j for j in sorted({r["jrt"] for r in rows}) if j > 1]
        if jr and 1 in {r["jrt"] for r in rows}:
            for a in arms:
                a1 = [np.mean(list(res["acc"].values())) for res in results if res["arm"] == a and res["jrt"] == 1]
                aj = [np.mean(list(res["acc"].values())) for res in results
                      if res["arm"] == a and res["jrt"] == jr[-1]]
                if a1 and aj:
                    L.append(f"- {a}: mean accuracy over the eval grid {np.mean(a1):.3f} without repetition, "
                             f"{np.mean(aj):.3f} with the context ×{jr[-1]} (mean over seeds).")
        L.append("")
    L.append("## Learnt η (E8), per run: layer → heads\n")
    for res in results:
        if res["arm"] != "eta0":
            L.append(f"- {res['arm']} seed {res['seed']} JRT {res['jrt']}×: "
                     + "; ".join(", ".join(f"{e:.3f}" for e in lay) for lay in res["eta"]))
    L.append("")
    L.append("## Training loss (mean per 5% of the steps) and time\n")
    L.append("| arm | seed | JRT | final loss | loss curve | train s | eval s |")
    L.append("|---|---|---|---|---|---|---|")
    for res in results:
        L.append(f"| {res['arm']} | {res['seed']} | {res['jrt']}× | {res['final_loss']:.3f} | "
                 + " ".join(f"{v:.2f}" for v in res["loss_curve"]) + f" | {res['train_s']:.1f} | {res['eval_s']:.1f} |")
    L.append("")
    L.append("## Commands\n")
    L.append("```")
    L.append(meta["command"])
    L.append("```")
    L.append("Tiny CPU check (Triton interpreter; tests/test_mqar.py): "
             "`TRITON_INTERPRET=1 osdn mqar --tiny --out /tmp/mqar`.\n")
    with open(paths["md"], "w") as f:
        f.write("\n".join(L))
    return paths


# ----------------------------------------------------------------------------------------------
# Command line


def _ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def _pairs(s):
    return [tuple(int(y) for y in x.split(":")) for x in s.split(",") if x.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    """``osdn mqar``: train the arms (η of E8 learnt vs 0) on MQAR with and without JRT repetition over
    several seeds; write reports/mqar.{md,json,png}."""
    ap = argparse.ArgumentParser(prog="osdn mqar", description="MQAR: OSDN vs the same layer with eta = 0")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2; tiny: 0)")
    ap.add_argument("--jrt", default=None, help="context repetitions to run, comma list (default 1,2; tiny: 1)")
    ap.add_argument("--arms", default="osdn,eta0", help=f"comma list of {sorted(ARMS)}")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (cap when --budget-min is set)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="wall budget for everything: steps per run are set from a measured step time, "
                         "the same for every run")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--train", default=None, help="train configs T:N,T:N,…")
    ap.add_argument("--eval", default=None, help="eval configs T:N,T:N,…")
    ap.add_argument("--eval-examples", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tiny", action="store_true", help="a few steps at tiny shapes (CPU interpreter check)")
    ns = ap.parse_args([] if argv is None else list(argv))
    t_start = time.perf_counter()
    dev = ns.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not dev.startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        print("osdn mqar: no CUDA device and TRITON_INTERPRET is not 1: the Triton kernels can only run in the "
              "interpreter on a CPU, which must be selected before osdn_fast is imported; run "
              "`TRITON_INTERPRET=1 osdn mqar --tiny`", file=sys.stderr)
        return 2
    if ns.tiny:
        cfg = MQARConfig(vocab_size=32, d_model=32, num_heads=2, mlp_ratio=1.0, chunk_size=16,
                         train_configs=((16, 2),), eval_configs=((16, 2),), jrt=(1,), seeds=(0,),
                         steps=2, batch_size=2, eval_examples=2, eval_batch=2, device=dev)
    else:
        cfg = MQARConfig(device=dev)
    for name, attr, conv in (("seeds", "seeds", _ints), ("jrt", "jrt", _ints), ("batch", "batch_size", int),
                             ("lr", "lr", float), ("d_model", "d_model", int), ("heads", "num_heads", int),
                             ("vocab", "vocab_size", int), ("train", "train_configs", _pairs),
                             ("eval", "eval_configs", _pairs), ("eval_examples", "eval_examples", int),
                             ("steps", "steps", int)):
        v = getattr(ns, name)
        if v is not None:
            setattr(cfg, attr, conv(v) if isinstance(v, str) else v)
    cfg.arms = [a for a in ns.arms.split(",") if a]
    for a in cfg.arms:
        if a not in ARMS:
            print(f"osdn mqar: --arms: unknown arm {a!r}, expected {sorted(ARMS)}", file=sys.stderr)
            return 2
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    plan = [(s, j, a) for s in cfg.seeds for j in cfg.jrt for a in cfg.arms]
    steps = cfg.steps
    if ns.budget_min is not None:
        cfg.budget_s = 60.0 * ns.budget_min
        steps = _calibrate(cfg, len(plan), t_start)
    cfg.steps = steps
    command = "osdn mqar " + " ".join(argv or [])
    meta = dict(command=command.strip(), device=(torch.cuda.get_device_name(0) if dev.startswith("cuda")
                                                 else "CPU (Triton interpreter)"),
                torch=torch.__version__, planned_runs=len(plan))
    print(f"osdn mqar: {len(plan)} runs of {steps} steps on {meta['device']}")
    results = []
    last = 0.0
    for seed, jrt, arm in plan:
        now = time.perf_counter() - t_start
        if cfg.budget_s is not None and now + last > cfg.budget_s + 30.0:
            print(f"osdn mqar: stopping before {arm} seed={seed} jrt={jrt}: {now:.0f} s used, the next run "
                  f"(~{last:.0f} s) would pass the budget of {cfg.budget_s:.0f} s")
            break
        t_run = time.perf_counter()
        results.append(train_run(cfg, arm, seed, jrt, steps))
        last = time.perf_counter() - t_run
        meta["wall_s"] = time.perf_counter() - t_start
        write_reports(results, cfg, ns.out, meta)  # after every run: a timeout keeps what finished
    meta["wall_s"] = time.perf_counter() - t_start
    paths = write_reports(results, cfg, ns.out, meta)
    print(f"wrote {', '.join(paths.values())} in {meta['wall_s']:.0f} s")
    return 0
