"""Spec labels and the traceability scan (pure Python; used by the docs extension and by the tests).

* :data:`SPEC_LABELS`: every equation, derivation and statement label of the normative spec
  (``shared/osdn-spec.md``), committed here so that a fresh clone has them without the spec file;
  :func:`labels_in_spec` re-reads them from the spec text when it is available, and a test checks the two
  agree.
* :func:`cited_labels`: the labels a docstring cites — bare tokens ``E1`` … ``E8``, ``D1`` … ``D5``,
  ``C1`` … ``C3``, ``T1`` … ``T5``; a range written with an en dash or hyphen (``E1–E8``, ``C1-C3``)
  expands to every label in it.
* :func:`scan`: the public functions of a set of packages — every function named in a module's
  ``__all__`` and defined in that module — with the labels their docstrings cite.
* :func:`check`: the two directions of traceability: labels no function implements (orphans) and public
  functions that cite no label (uncited), plus tokens that look like labels but are not in the spec.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["SPEC_LABELS", "LABEL_TITLES", "labels_in_spec", "find_spec", "cited_labels", "label_spans",
           "PublicFunction", "ScanResult", "scan", "check"]

SPEC_LABELS: Tuple[str, ...] = (
    tuple(f"E{i}" for i in range(1, 9)) + tuple(f"D{i}" for i in range(1, 6))
    + tuple(f"C{i}" for i in range(1, 4)) + tuple(f"T{i}" for i in range(1, 6))
)

# one short title per label, for tables and link titles (the spec's own words, abridged)
LABEL_TITLES: Dict[str, str] = {
    "E1": "APF pull toward the prior", "E2": "clip: the played preconditioner", "E3": "write key",
    "E4": "pre-write residual", "E5": "OSDN write", "E6": "read", "E7": "contraction factor",
    "E8": "hypergradient (OGD) step",
    "D1": "inner loss and DeltaNet", "D2": "right preconditioning = write-key scaling",
    "D3": "state-free hypergradient feedback", "D4": "the learner as a one-column gated delta rule",
    "D5": "token-local contraction and the right-Newton comparator",
    "C1": "d-scan (triangular solve)", "C2": "write keys of a chunk", "C3": "WY/UT state update with asymmetric keys",
    "T1": "equivalence of the forms", "T2": "state-free feedback", "T3": "contraction identity",
    "T4": "regret bound", "T5": "super-geometric contraction",
}

_LETTERS = "EDCT"
_RANGE = re.compile(r"(?<![A-Za-z0-9_])([EDCT])(\d+)\s*[–-]\s*([EDCT])?(\d+)(?![A-Za-z0-9_])")
_TOKEN = re.compile(r"(?<![A-Za-z0-9_])([EDCT])(\d+)(?![A-Za-z0-9_])")
_SPEC_DEF = re.compile(r"\(([EDCT]\d+)\)")


def labels_in_spec(text: str) -> Tuple[str, ...]:
    """The labels the spec defines: every ``(X#)`` with X in E, D, C, T, in the spec's order, deduplicated."""
    seen: List[str] = []
    for m in _SPEC_DEF.finditer(text):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return tuple(seen)


def find_spec(start: Optional[Path] = None) -> Optional[Path]:
    """The spec file if this checkout can see it: ``../shared/osdn-spec.md`` next to the repository, or
    ``/work/shared/osdn-spec.md``; None in a fresh clone without it."""
    root = Path(start) if start else Path(__file__).resolve().parents[1]
    for cand in (root.parent / "shared" / "osdn-spec.md", root / "shared" / "osdn-spec.md",
                 Path("/work/shared/osdn-spec.md")):
        if cand.is_file():
            return cand
    return None


def label_spans(text: str) -> List[Tuple[int, int, List[str]]]:
    """(start, end, labels) for every label token or range in ``text``, ranges expanded, left to right.

    A range ``X#–Y#`` expands only when both ends have the same letter; ``E1–8`` means ``E1–E8``.
    Tokens are returned whatever the spec says (unknown ones are reported by :func:`check`).
    """
    spans: List[Tuple[int, int, List[str]]] = []
    taken = []
    for m in _RANGE.finditer(text):
        a, i, b, j = m.group(1), int(m.group(2)), m.group(3) or m.group(1), int(m.group(4))
        if a != b or j <= i:
            continue
        spans.append((m.start(), m.end(), [f"{a}{n}" for n in range(i, j + 1)]))
        taken.append((m.start(), m.end()))
    for m in _TOKEN.finditer(text):
        if any(s <= m.start() < e for s, e in taken):
            continue
        spans.append((m.start(), m.end(), [m.group(1) + m.group(2)]))
    return sorted(spans)


def cited_labels(doc: Optional[str]) -> List[str]:
    """Labels cited by a docstring, ranges expanded, in first-seen order."""
    out: List[str] = []
    for _, _, labs in label_spans(doc or ""):
        for lab in labs:
            if lab not in out:
                out.append(lab)
    return out


@dataclass
class PublicFunction:
    """A public function: its canonical dotted name (module.name), the labels its docstring cites."""

    name: str
    module: str
    labels: List[str]

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class ScanResult:
    functions: List[PublicFunction] = field(default_factory=list)
    unimportable: Dict[str, str] = field(default_factory=dict)  # module -> error

    def implementers(self) -> Dict[str, List[PublicFunction]]:
        """label -> the public functions citing it (every spec label present, possibly empty)."""
        out: Dict[str, List[PublicFunction]] = {lab: [] for lab in SPEC_LABELS}
        for f in self.functions:
            for lab in f.labels:
                out.setdefault(lab, []).append(f)
        return out


def _modules(package: str) -> Iterable[str]:
    pkg = importlib.import_module(package)
    yield package
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        yield info.name


def _private(modname: str) -> bool:
    """Private modules (``_x``, ``__main__``) are not public API and may be scripts: never imported."""
    return any(part.startswith("_") for part in modname.split(".")[1:])


def scan(packages: Sequence[str] = ("osdn_ref", "osdn_fast"), exclude: Sequence[str] = ()) -> ScanResult:
    """Import every public module of ``packages`` (private ``_x`` modules and ``__main__`` are skipped) and
    collect the functions named in any module's ``__all__``,
    each once, under the module that defines it (so ``osdn_ref.recurrent_osdn`` is
    ``osdn_ref.recurrent.recurrent_osdn``). Modules that fail to import are recorded in ``unimportable``
    rather than hidden."""
    res = ScanResult()
    seen = set()
    for package in packages:
        try:
            names = list(_modules(package))
        except Exception as exc:  # the package itself does not import
            res.unimportable[package] = f"{type(exc).__name__}: {exc}"
            continue
        for modname in names:
            if modname in exclude or _private(modname):
                continue
            try:
                mod = importlib.import_module(modname)
            except Exception as exc:
                res.unimportable[modname] = f"{type(exc).__name__}: {exc}"
                continue
            for name in getattr(mod, "__all__", []):
                obj = getattr(mod, name, None)
                if not inspect.isfunction(obj):
                    continue
                key = (obj.__module__, obj.__name__)
                if key not in seen:
                    seen.add(key)
                    res.functions.append(PublicFunction(obj.__name__, obj.__module__,
                                                        cited_labels(inspect.getdoc(obj))))
    res.functions.sort(key=lambda f: f.qualname)
    return res


def check(result: ScanResult, labels: Sequence[str] = SPEC_LABELS) -> Dict[str, List[str]]:
    """Traceability both ways. Returns lists (empty when all is well):

    ``orphan_labels``: spec labels no public function cites; ``uncited_functions``: public functions that
    cite no spec label; ``unknown_labels``: 'function: token' for label-like tokens not in the spec.
    """
    known = set(labels)
    cited = {lab for f in result.functions for lab in f.labels}
    return dict(
        orphan_labels=[lab for lab in labels if lab not in cited],
        uncited_functions=[f.qualname for f in result.functions if not (set(f.labels) & known)],
        unknown_labels=[f"{f.qualname}: {lab}" for f in result.functions for lab in f.labels if lab not in known],
    )
