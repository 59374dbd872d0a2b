"""Sphinx configuration of the OSDN docs (MyST Markdown, autodoc with NumPy-style docstrings).

Build: ``make docs`` (``python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html``).
The local extension ``osdn_docs`` (docs/_ext) writes the API pages and the report tables at build time,
links spec labels in docstrings to their equations and lists, under each equation, the functions that
implement it (see docs/traceability.md).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))
# Without a CUDA GPU, importing osdn_fast (Triton kernels) for autodoc needs the interpreter mode.
os.environ.setdefault("TRITON_INTERPRET", "1")

project = "osdn"
author = "osdn contributors"
copyright = "2026, osdn contributors"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "osdn_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = False  # types as plain text: shapes like [B, T, H, K] are not cross-references
napoleon_use_rtype = False
napoleon_use_ivar = True
autodoc_typehints = "none"
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_mock_imports = []

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = "OSDN: derivation, proofs and code"
html_theme_options = {"page_width": "1180px", "sidebar_width": "260px"}

nitpicky = True
suppress_warnings = []
