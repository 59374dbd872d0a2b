"""The ``osdn`` command line (also ``python -m osdn_ref``).

Each subcommand lives in the module that owns its work and is imported only when called, so that
``osdn verify`` needs neither torch nor triton to start.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# subcommand -> (module, help). Each module defines ``main(argv: list[str]) -> int``.
SUBCOMMANDS = {
    "verify": ("osdn_ref.verify", "check T1–T5 on seeded problems; write reports/verify.{md,json}"),
    "tolerance": ("osdn_fast.tolerance", "measure the fast path's error against the float64 reference"),
    "bench": ("osdn_fast.bench", "benchmark chunk_osdn against flash-linear-attention (GPU)"),
    "recall": ("osdn_ref.recall", "associative recall residuals, OSDN vs DeltaNet (mechanism)"),
    "mqar": ("osdn_fast.mqar", "train small MQAR models, OSDN vs the same layer with eta = 0 (GPU)"),
}


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch ``osdn <subcommand> [args...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="osdn", description="OSDN reference, kernels and checks")
    parser.add_argument("subcommand", choices=sorted(SUBCOMMANDS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in SUBCOMMANDS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the subcommand (--help)")
    ns = parser.parse_args(argv[:1] if argv else argv)
    module = importlib.import_module(SUBCOMMANDS[ns.subcommand][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
