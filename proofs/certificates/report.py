"""Run every certificate and write ``reports/certificates.{md,json}`` (``python -m proofs.certificates``).

* Symbolic identities (:mod:`.identities`): each claim proved for general dimension, and each altered
  claim both *not* proved and *disproved* by an exact rational counterexample.
* Inequalities (:mod:`.inequalities`): T4 and T5 checked at 50 digits on Hypothesis-generated instances
  (every adversarial kind of :mod:`.instances`), reporting the smallest margin seen per kind; each
  altered statement (changed bound or dropped assumption) is searched for a violating instance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, replace
from typing import Dict, List

import numpy as np
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from . import identities as I
from .exact import ALTERATIONS as EXACT_ALTERATIONS, chunkwise_exact, exact_problems, recurrent_exact
from .inequalities import (DPS, T4_ALTERED, T5_ALTERED, T5Instance, check_t4, check_t5, degenerate, summarize,
                           t5_assumptions)
from .instances import T4_KINDS, T5_KINDS, t4_instances, t5_instances, t5_short_key_instances
from .sums import counterexample, prove_zero

__all__ = ["run_identities", "run_inequalities", "run_exact", "t5_assumption_drops", "main"]


def run_identities(counterexample_tries: int = 20) -> List[Dict[str, object]]:
    """Prove each claim, and show each alteration unproved and disproved."""
    rows = []
    for name, fn in I.CLAIMS.items():
        t0 = time.perf_counter()
        lhs, rhs = fn()
        proved = prove_zero(lhs - rhs)
        alts = []
        for alt in I.ALTERED[name]:
            la, ra = fn(alter=alt)
            ce = counterexample(la - ra, [I.K, I.V], I.COMPONENTS.get(name), tries=counterexample_tries)
            alts.append(dict(alteration=alt, proved=prove_zero(la - ra),
                             counterexample=None if ce is None else
                             dict(point={str(s): int(v) for s, v in ce[0].items()}, difference=str(ce[1]))))
        rows.append(dict(claim=name, doc=(fn.__doc__ or "").strip().splitlines()[0], proved=proved,
                         alterations=alts, seconds=round(time.perf_counter() - t0, 3)))
    return rows


def _settings(n: int, seed: int):
    return settings(max_examples=n, database=None, deadline=None, derandomize=seed is None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


def _collect(strategy, check, n: int, seed):
    """Run ``check`` on ``n`` Hypothesis-drawn instances; return the list of margins."""
    out = []

    @_settings(n, seed)
    @given(strategy)
    def body(inst):
        res = check(inst)
        out.extend(res if isinstance(res, list) else [res])

    if seed is not None:
        body = __import__("hypothesis").seed(seed)(body)
    body()
    return out


def _find_violation(strategy, check, n: int):
    """An instance on which ``check`` reports a violated inequality, searched by Hypothesis; None if none."""
    try:
        inst = find(strategy, lambda i: not all(m.holds for m in (lambda r: r if isinstance(r, list) else [r])(check(i))),
                    settings=_settings(n, None))
    except Exception as exc:  # hypothesis.errors.NoSuchExample
        if type(exc).__name__ == "NoSuchExample":
            return None
        raise
    res = check(inst)
    res = res if isinstance(res, list) else [res]
    worst = min(res, key=lambda m: m.margin)
    return dict(kind=inst.kind, T=int(np.shape(inst.k)[0]), K=int(np.shape(inst.k)[1]), eta=float(inst.eta),
                value=worst.value, bound=worst.bound, margin=worst.margin)


def t5_assumption_drops(inst: T5Instance) -> Dict[str, T5Instance]:
    """T5 instances that each violate exactly one assumption (the rest as in ``inst``)."""
    return {
        "T5 without 0 < η < 2 (η = 2.5)": replace(inst, eta=2.5, kind=inst.kind + "+eta=2.5"),
        "T5 without β ≤ 1 (β_t⟨k², d*⟩ = 1.6)": replace(inst, beta_scale=1.6, kind=inst.kind + "+beta>1"),
        "T5 without unit keys (‖k‖ = 3, d* consistent)": replace(
            inst, k=3.0 * inst.k / np.linalg.norm(inst.k, axis=-1, keepdims=True), unit=False,
            kind=inst.kind + "+|k|=3"),
    }


def run_inequalities(n_examples: int = 200, seed: int = 20260527, search: int = 300) -> Dict[str, object]:
    """T4 and T5 on Hypothesis instances (per kind), and the search for violations of the alterations."""
    res: Dict[str, object] = {"dps": DPS, "n_examples_per_kind": n_examples, "seed": seed}
    def entry(ms):
        live = [m for m in ms if not degenerate(m)]
        return dict(checked=len(ms), all_hold=all(m.holds for m in ms), smallest=asdict(summarize(ms)),
                    degenerate=len(ms) - len(live), smallest_abs_margin=min(m.margin for m in live))

    res["T4"] = {kind: entry(_collect(t4_instances(kinds=(kind,)), check_t4, n_examples, seed)) for kind in T4_KINDS}
    res["T5"] = {kind: entry(_collect(t5_instances(kinds=(kind,)), check_t5, n_examples, seed)) for kind in T5_KINDS}
    res["T5 extended to ‖k‖ ≤ 1"] = {"short_keys": entry(_collect(t5_short_key_instances(), check_t5, n_examples, seed))}
    alt = {}
    for name in T4_ALTERED:
        alt[name] = _find_violation(t4_instances(), lambda i, n=name: check_t4(i, n), search)
    for name in T5_ALTERED:
        alt[name] = _find_violation(t5_instances(), lambda i, n=name: check_t5(i, n), search)
    for name in t5_assumption_drops(T5Instance(np.eye(1), np.ones(1), 1.0, np.zeros(1))):
        alt[name] = _find_violation(t5_instances(kinds=("one_hot", "random")),
                                    lambda i, n=name: check_t5(t5_assumption_drops(i)[n]), search)
    res["altered"] = alt
    return res


def run_exact(n_examples: int = 200, seed: int = 20260527) -> Dict[str, object]:
    """T1 in exact rational arithmetic: C1–C3 == E1–E8 for every chunk size, and each altered C1–C3 caught."""
    counts = dict(instances=0, comparisons=0, unequal=0, tokens_max=0)

    def check(kw):
        ref = recurrent_exact(**kw)
        counts["instances"] += 1
        counts["tokens_max"] = max(counts["tokens_max"], len(kw["k"]))
        for C in range(1, len(kw["k"]) + 1):
            counts["comparisons"] += 1
            counts["unequal"] += chunkwise_exact(**kw, chunk=C) != ref
        return []

    _collect(exact_problems(), check, n_examples, seed)
    caught = {}
    for alt in EXACT_ALTERATIONS:
        def differs(kw, alt=alt):
            ref = recurrent_exact(**kw)
            return any(chunkwise_exact(**kw, chunk=C, alter=alt) != ref for C in range(2, len(kw["k"]) + 1))
        try:
            find(exact_problems(), differs, settings=_settings(300, None))
            caught[alt] = True
        except Exception as exc:
            if type(exc).__name__ != "NoSuchExample":
                raise
            caught[alt] = False
    return dict(counts, all_equal=counts["unequal"] == 0, alterations_caught=caught)


def _fmt(x: float) -> str:
    return f"{x:.3e}"


def render_markdown(ident, ineq, meta, exact=None) -> str:
    L = ["# Certificates of the proofs (identities and 50-digit inequality checks)", "",
         f"Generated by `python -m proofs.certificates` on {meta['host']} in {meta['seconds']:.1f} s "
         f"(Hypothesis seed {ineq['seed']}, {ineq['n_examples_per_kind']} instances per kind, "
         f"mpmath at {ineq['dps']} digits).", "",
         "## Symbolic identities (general dimension K, V)", "",
         "| claim | proved | alteration | alteration proved? | exact counterexample (dims, difference) |",
         "|---|---|---|---|---|"]
    for r in ident:
        for i, a in enumerate(r["alterations"]):
            ce = a["counterexample"]
            ce_s = "none found" if ce is None else f"{ce['point']}, {ce['difference'][:40]}"
            L.append(f"| {r['claim'] if i == 0 else ''} | {('yes' if r['proved'] else 'NO') if i == 0 else ''} | "
                     f"{a['alteration']} | {'YES' if a['proved'] else 'no'} | {ce_s} |")
    for st_name in ("T4", "T5", "T5 extended to ‖k‖ ≤ 1"):
        L += ["", f"## {st_name} at 50 digits: smallest margin per instance kind", "",
              "Relative margin = (bound − value)/bound over the instances that are not 0 ≤ 0 (degenerate: "
              "every key zero); a 0 means the bound is attained. The smallest absolute margin is over the "
              "same instances.", "",
              "| kind | checks | 0 ≤ 0 | all hold | smallest relative margin | its value | its bound | "
              "smallest absolute margin |",
              "|---|---|---|---|---|---|---|---|"]
        for kind, r in ineq[st_name].items():
            s = r["smallest"]
            L.append(f"| {kind} | {r['checked']} | {r['degenerate']} | {'yes' if r['all_hold'] else 'NO'} | "
                     f"{_fmt(s['rel'])} | "
                     f"{_fmt(s['value'])} | {_fmt(s['bound'])} | {_fmt(r['smallest_abs_margin'])} |")
    ex = exact
    if ex:
        L += ["", "## T1 in exact rational arithmetic", "",
              f"C1–C3 against E1–E8 over Python fractions: {ex['instances']} Hypothesis instances (up to "
              f"{ex['tokens_max']} tokens, hard resets, decays, active clip), every chunk size: "
              f"{ex['comparisons']} comparisons, {ex['unequal']} unequal. Altered chunkwise forms caught: "
              + ", ".join(f"{a}: {'yes' if c else 'NO'}" for a, c in ex["alterations_caught"].items()) + "."]
    L += ["", "## Altered statements (each must be violated on some instance)", "",
          "| altered statement | violated | instance (kind, T, K, η) | value | bound |", "|---|---|---|---|---|"]
    for name, v in ineq["altered"].items():
        if v is None:
            L.append(f"| {name} | NO (none found) | | | |")
        else:
            L.append(f"| {name} | yes | {v['kind']}, {v['T']}, {v['K']}, {v['eta']:.6g} | {_fmt(v['value'])} | "
                     f"{_fmt(v['bound'])} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proofs.certificates", description=__doc__)
    ap.add_argument("--out", default="reports")
    ap.add_argument("--examples", type=int, default=200, help="Hypothesis instances per kind")
    ap.add_argument("--seed", type=int, default=20260527)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ident = run_identities()
    ineq = run_inequalities(args.examples, args.seed)
    exact = run_exact(args.examples, args.seed)
    meta = dict(host=platform.platform(), python=platform.python_version(),
                seconds=time.perf_counter() - t0)
    ok = (all(r["proved"] and all(not a["proved"] and a["counterexample"] for a in r["alterations"]) for r in ident)
          and all(r["all_hold"] for s in ("T4", "T5", "T5 extended to ‖k‖ ≤ 1") for r in ineq[s].values())
          and all(v is not None for v in ineq["altered"].values())
          and exact["all_equal"] and all(exact["alterations_caught"].values()))
    os.makedirs(args.out, exist_ok=True)
    doc = dict(meta=meta, ok=ok, identities=ident, inequalities=ineq, exact_T1=exact)
    with open(os.path.join(args.out, "certificates.json"), "w") as f:
        json.dump(doc, f, indent=1, default=float)
    md = render_markdown(ident, ineq, meta, exact)
    with open(os.path.join(args.out, "certificates.md"), "w") as f:
        f.write(md)
    print(md)
    for s in ("T4", "T5"):
        w = min((r["smallest"] for r in ineq[s].values()), key=lambda m: m["rel"])
        print(f"smallest {s} margin: relative {w['rel']:.3e} (absolute {w['margin']:.3e}, {w['label']})")
    print("all certificates pass" if ok else "SOME CERTIFICATE FAILED")
    return 0 if ok else 1
