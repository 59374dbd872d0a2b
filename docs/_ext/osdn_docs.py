"""Sphinx extension of the OSDN docs: traceability both ways, generated API pages, report tables.

* ``autodoc-process-docstring``: every spec label in a docstring (``E5``, ranges such as ``E1–E8``)
  becomes a link to its equation (targets ``spec-E5`` … defined on the derivation pages).
* ``{implementers} E5``: a list of the public functions whose docstrings cite the label, generated from
  the code by :func:`proofs.labels.scan` (the same scan the test-suite checks).
* ``{traceability-matrix}``: the full table label → functions and function → labels.
* ``builder-inited``: writes ``docs/api/*.rst`` (autodoc of every module of osdn_ref and osdn_fast, with
  each module's public objects) and ``docs/_generated/reports.md`` (every ``reports/*.json`` rendered as
  tables), so both follow the code and the committed reports at build time.
* ``missing-reference``: resolves ``:func:`osdn_ref.recurrent_osdn``` (a re-export) and unqualified
  names to the object's defining module, where autodoc documents it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Dict, List

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx import addnodes
from sphinx.util import logging

from proofs.labels import LABEL_TITLES, SPEC_LABELS, label_spans, scan

logger = logging.getLogger(__name__)

PACKAGES = ("osdn_ref", "osdn_fast")  # scanned for traceability
API_PACKAGES = PACKAGES + ("proofs",)  # documented
DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
_SCAN = None
MAX_ROWS = 40  # rows of one table on the reports page


def _scan():
    global _SCAN
    if _SCAN is None:
        _SCAN = scan(PACKAGES)
        for mod, err in _SCAN.unimportable.items():
            # shown on the traceability page; tests/test_traceability.py fails on it
            logger.info("traceability: module %s does not import (%s)", mod, err)
    return _SCAN


# ---------------------------------------------------------------------------------------------- docstrings
_LITERAL = re.compile(r"``.*?``|:[a-z:]+:`[^`]*`|`[^`]*`")


def _link_labels(line: str) -> str:
    """Replace label tokens outside literals and roles by :ref: links (escaped spaces keep rst happy
    next to any character)."""
    out, pos = [], 0
    protected = [(m.start(), m.end()) for m in _LITERAL.finditer(line)]
    for s, e, labs in label_spans(line):
        if any(ps <= s < pe for ps, pe in protected) or not all(lab in SPEC_LABELS for lab in labs):
            continue
        text = line[s:e]
        if len(labs) == 1:
            link = f":ref:`{labs[0]} <spec-{labs[0]}>`"
        else:
            link = f":ref:`{labs[0]} <spec-{labs[0]}>`–:ref:`{labs[-1]} <spec-{labs[-1]}>`"
        del text
        out.append(line[pos:s])
        out.append(("\\ " if s > 0 else "") + link + ("\\ " if e < len(line) else ""))
        pos = e
    out.append(line[pos:])
    return "".join(out)


_ESCAPE_BARS = re.compile(r"(?<!\\)\|")
_VARTYPE = re.compile(r"^(\s*):vartype (\S+): (.*)$")


def _is_table_row(stripped: str) -> bool:
    return ((stripped.startswith("|") and stripped.endswith("|") and stripped.count("|") >= 3)
            or stripped.startswith("+-") or stripped.startswith("+="))


def _fold_vartypes(lines):
    """``:vartype x: Tensor [B, H]`` would become a cross-reference to a class named "Tensor [B, H]":
    fold the type into the ``:ivar x:`` line as plain text instead."""
    types = {}
    keep = []
    for line in lines:
        m = _VARTYPE.match(line)
        if m:
            types[m.group(2)] = m.group(3)
        else:
            keep.append(line)
    if not types:
        return lines
    out = []
    for line in keep:
        for name, typ in types.items():
            tag = f":ivar {name}:"
            if line.lstrip().startswith(tag):
                head, rest = line.split(tag, 1)
                line = f"{head}{tag} ({typ.strip()}){rest}"
        out.append(line)
    return out


def _blank_before_nested_lists(lines):
    """Insert the blank line rst needs before a nested bullet list that directly follows a list item."""
    out = []
    for line in lines:
        st = line.lstrip()
        if out and st[:2] in ("- ", "* ") and out[-1].strip():
            ind = len(line) - len(st)
            prev = out[-1]
            if ind > len(prev) - len(prev.lstrip()) and prev.lstrip()[:2] in ("- ", "* "):
                out.append("")
        out.append(line)
    return out


_GLOB_STAR = re.compile(r"(?<=[\w\-/])\*(?=\.\w)")  # file globs such as tolerance-*.json


def process_docstring(app, what, name, obj, options, lines):
    doc_of_type = getattr(type(obj), "__doc__", None) if what == "data" else None
    if doc_of_type and lines and lines[0].strip() == doc_of_type.strip().splitlines()[0].strip():
        lines[:] = []  # a constant without its own doc: autodoc fell back to its type's docstring (dict, tuple)
        return
    new = _fold_vartypes(_blank_before_nested_lists(list(lines)))
    in_literal = False
    for i, line in enumerate(new):
        stripped = line.strip()
        if in_literal and stripped and not line.startswith((" ", "\t")):
            in_literal = False
        if stripped.endswith("::"):
            in_literal = True
            continue
        if in_literal:
            continue
        # |x| is rst substitution syntax; docstrings use it for absolute values (tables are left alone)
        if "|" in line and not _is_table_row(stripped):
            line = _ESCAPE_BARS.sub(r"\\|", line)
        line = _GLOB_STAR.sub(r"\\*", line)
        new[i] = _link_labels(line)
    lines[:] = new


# ---------------------------------------------------------------------------------------------- directives
def _func_xref(qualname: str, text: str):
    ref = addnodes.pending_xref("", refdomain="py", reftype="func", reftarget=qualname, refexplicit=True,
                                refwarn=True)
    ref["py:module"] = None
    ref["py:class"] = None
    ref += nodes.literal(text, text, classes=["xref", "py", "py-func"])
    return ref


class Implementers(Directive):
    """``{implementers} E5``: the public functions citing a label, generated from their docstrings."""

    required_arguments = 1
    has_content = False

    def run(self):
        label = self.arguments[0]
        if label not in SPEC_LABELS:
            raise self.error(f"implementers: {label!r} is not a spec label")
        funcs = _scan().implementers()[label]
        para = nodes.paragraph()
        para += nodes.strong(text=f"Implemented by ({label}, from the docstrings): ")
        if not funcs:
            para += nodes.emphasis(text="no public function cites this label")
            logger.warning("traceability: %s has no implementing function", label, location=self.get_location())
        for i, f in enumerate(funcs):
            if i:
                para += nodes.Text(", ")
            para += _func_xref(f.qualname, f.qualname.replace("osdn_ref.", "osdn_ref.", 1))
        return [para]


class TraceabilityMatrix(Directive):
    """The label → functions table, generated from the code."""

    has_content = False

    def run(self):
        impl = _scan().implementers()
        table = nodes.table()
        tgroup = nodes.tgroup(cols=3)
        table += tgroup
        for w in (8, 30, 62):
            tgroup += nodes.colspec(colwidth=w)
        thead = nodes.thead()
        tgroup += thead
        row = nodes.row()
        for h in ("label", "meaning", "implemented by"):
            row += nodes.entry("", nodes.paragraph(text=h))
        thead += row
        body = nodes.tbody()
        tgroup += body
        for lab in SPEC_LABELS:
            row = nodes.row()
            p = nodes.paragraph()
            ref = addnodes.pending_xref("", refdomain="std", reftype="ref", reftarget=f"spec-{lab}".lower(),
                                        refexplicit=True, refwarn=True)
            ref += nodes.inline(lab, lab)
            p += ref
            row += nodes.entry("", p)
            row += nodes.entry("", nodes.paragraph(text=LABEL_TITLES[lab]))
            p2 = nodes.paragraph()
            for i, f in enumerate(impl[lab]):
                if i:
                    p2 += nodes.Text(", ")
                p2 += _func_xref(f.qualname, f.name)
            row += nodes.entry("", p2)
            body += row
        return [table]


class FunctionLabels(Directive):
    """The function → labels list, generated from the code."""

    has_content = False

    def run(self):
        lst = nodes.bullet_list()
        for f in _scan().functions:
            item = nodes.list_item()
            p = nodes.paragraph()
            p += _func_xref(f.qualname, f.qualname)
            p += nodes.Text(" — ")
            for i, lab in enumerate(f.labels):
                if i:
                    p += nodes.Text(", ")
                ref = addnodes.pending_xref("", refdomain="std", reftype="ref", reftarget=f"spec-{lab}".lower(),
                                            refexplicit=True, refwarn=True)
                ref += nodes.inline(lab, lab)
                p += ref
            if not f.labels:
                p += nodes.emphasis(text="cites no spec label")
            item += p
            lst += item
        out = [lst]
        bad = _scan().unimportable
        if bad:
            para = nodes.paragraph()
            para += nodes.strong(text="Modules that did not import in this build (not scanned): ")
            para += nodes.Text("; ".join(f"{m} ({e})" for m, e in sorted(bad.items())))
            out.append(para)
        return out


# ---------------------------------------------------------------------------------------------- generated pages
def _public_by_module(package: str) -> Dict[str, List[str]]:
    """module -> public objects (named in some __all__) that the module defines, in __all__ order."""
    out: Dict[str, List[str]] = {}
    pkg = importlib.import_module(package)
    mods = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]
    for modname in mods:
        if any(part.startswith("_") for part in modname.split(".")[1:]):
            continue  # private modules (and __main__) are not public API and may be scripts
        try:
            mod = importlib.import_module(modname)
        except Exception:
            continue
        out.setdefault(modname, [])
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            home = getattr(obj, "__module__", None) if (inspect.isfunction(obj) or inspect.isclass(obj)) else modname
            if home is None or not home.startswith(package):
                continue
            lst = out.setdefault(home, [])
            if name not in lst and (home == modname or inspect.isfunction(obj) or inspect.isclass(obj)):
                lst.append(name)
    return out


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def write_api_pages() -> None:
    titles = {"osdn_ref": "osdn_ref — float64 reference and theory quantities",
              "osdn_fast": "osdn_fast — Triton kernels behind the torch API",
              "proofs": "proofs — certificates and the traceability scan"}
    for package in API_PACKAGES:
        try:
            by_mod = _public_by_module(package)
        except Exception as exc:
            text = f"{titles[package]}\n{'=' * 60}\n\nThe package does not import in this build: ``{exc}``.\n"
            _write_if_changed(DOCS / "api" / f"{package}.rst", text)
            continue
        lines = [titles[package], "=" * 60, "",
                 f".. automodule:: {package}", "   :no-members:", "",
                 "Public objects are documented under the module that defines them; spec labels in the "
                 "docstrings link to their equations.", ""]
        for modname in sorted(by_mod):
            names = by_mod[modname]
            if modname == package:
                continue
            mod = importlib.import_module(modname)
            routines = [n for n in names if inspect.isfunction(getattr(mod, n, None)) or inspect.isclass(getattr(mod, n, None))]
            data = [n for n in names if n not in routines]
            lines += [f"``{modname}``", "-" * (len(modname) + 4), "", f".. automodule:: {modname}"]
            lines += ([f"   :members: {', '.join(routines)}", "   :member-order: bysource", ""]
                      if routines else ["   :no-members:", ""])
            for n in data:
                # the annotation is suppressed (string annotations would become broken cross-references);
                # the value is shown as a literal block instead
                import pprint

                value = pprint.pformat(getattr(mod, n, None), width=100, compact=True).splitlines()
                if len(value) > 30:
                    value = value[:30] + ["..."]
                lines += [f".. autodata:: {modname}.{n}", "   :annotation:", "", "   Value::", ""]
                lines += [f"      {v}" for v in value] + [""]
        _write_if_changed(DOCS / "api" / f"{package}.rst", "\n".join(lines) + "\n")


def _md_escape(x, limit: int = 160) -> str:
    s = json.dumps(x, ensure_ascii=False, default=str) if isinstance(x, (dict, list)) else str(x)
    s = s.replace("|", "\\|").replace("\n", " ").replace("`", "'")
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _fmt_val(x) -> str:
    if isinstance(x, float):
        return f"{x:.3e}" if (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4)) else f"{x:.6g}"
    return _md_escape(x, 400 if isinstance(x, (dict, list)) else 160)


def _render_json(obj, depth: int, lines: List[str]) -> None:
    """Dicts become headings or key/value tables, lists of dicts become tables."""
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        cols: List[str] = []
        for r in obj:
            for k2 in r:
                if k2 not in cols:
                    cols.append(k2)
        nested: List[str] = []
        lines += ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in obj[:MAX_ROWS]:
            lines.append("| " + " | ".join(_fmt_val(r.get(c, "")) for c in cols) + " |")
        if len(obj) > MAX_ROWS:
            lines += ["", f"({len(obj) - MAX_ROWS} more rows in the JSON file)"]
        if nested:
            lines += ["", f"(nested fields not shown: {', '.join(sorted(set(nested)))}; see the JSON file)"]
        lines.append("")
        return
    if isinstance(obj, dict):
        scalars = {k2: v2 for k2, v2 in obj.items() if not isinstance(v2, (dict, list))}
        if scalars:
            lines += ["| key | value |", "|---|---|"]
            lines += [f"| {_md_escape(k2)} | {_fmt_val(v2)} |" for k2, v2 in scalars.items()]
            lines.append("")
        for k2, v2 in obj.items():
            if isinstance(v2, (dict, list)):
                if depth >= 5:
                    lines += [f"**{_md_escape(k2)}**: `{_md_escape(v2)}`", ""]
                    continue
                lines += [f"{'#' * min(depth + 1, 6)} {_md_escape(k2)}", ""]
                _render_json(v2, depth + 1, lines)
        return
    if isinstance(obj, list):
        lines += [", ".join(_fmt_val(v2) for v2 in obj), ""]
        return
    lines += [_fmt_val(obj), ""]


def write_reports_page() -> None:
    def rank(f):
        order = ("verify", "tolerance", "certificates")
        return (next((i for i, o in enumerate(order) if f.name.startswith(o)), len(order)), f.name)

    files = sorted((ROOT / "reports").glob("*.json"), key=rank)
    lines = [f"<!-- generated at build time from {len(files)} file(s) in reports/ -->", ""]
    if files:
        lines += ["Files rendered below: " + ", ".join(f"`{f.name}`" for f in files) + ".", ""]
    if not files:
        lines += ["No `reports/*.json` file exists in this checkout yet: run `make report` "
                  "(and `python -m proofs.certificates`, `osdn tolerance`) first.", ""]
    for f in files:
        lines += [f"## `reports/{f.name}`", ""]
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except Exception as exc:
            lines += [f"Could not be read: `{_md_escape(exc)}`.", ""]
            continue
        _render_json(data, 2, lines)
    _write_if_changed(DOCS / "_generated" / "reports.md", "\n".join(lines) + "\n")


def builder_inited(app):
    write_api_pages()
    write_reports_page()
    _figures(app)


def _figures(app):
    """Make the figures only if one is missing (they are committed; ``python docs/figures.py`` remakes them)."""
    need = ["regret_t4.png", "contraction_t5.png", "apf_precond.png"]
    if all((DOCS / "_static" / "figures" / n).exists() for n in need):
        return
    import runpy

    runpy.run_path(str(DOCS / "figures.py"), run_name="__main__")


# ---------------------------------------------------------------------------------------------- references
def missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    mod = node.get("py:module")
    cands = [target]
    if mod:
        cands += [f"{mod}.{target}", f"{mod.rsplit('.', 1)[0]}.{target}"]
    cands += [f"{p}.{target}" for p in PACKAGES]
    import pydoc

    for cand in cands:
        try:
            obj = pydoc.locate(cand)
        except Exception:
            obj = None
        if inspect.ismodule(obj):
            canonical = obj.__name__
        elif obj is not None and hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
            canonical = f"{obj.__module__}.{obj.__qualname__}"
        else:
            continue
        if canonical == target:
            continue
        res = env.get_domain("py").resolve_xref(env, node.get("refdoc", env.docname), app.builder,
                                                node["reftype"], canonical, node, contnode)
        if res is not None:
            return res
    return None


_QUOTED_ANNOTATION = re.compile(r":\s*'[^']*'")


def process_signature(app, what, name, obj, options, signature, return_annotation):
    """Drop string annotations (dataclass fields under ``from __future__ import annotations``) that
    ``autodoc_typehints = "none"`` leaves in class signatures."""
    if signature and "'" in signature:
        return _QUOTED_ANNOTATION.sub("", signature), return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-signature", process_signature)
    app.connect("autodoc-process-docstring", process_docstring, priority=600)
    app.connect("builder-inited", builder_inited)
    app.connect("missing-reference", missing_reference)
    app.add_directive("implementers", Implementers)
    app.add_directive("traceability-matrix", TraceabilityMatrix)
    app.add_directive("function-labels", FunctionLabels)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
