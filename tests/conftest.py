"""Test configuration: Hypothesis profiles and a reproducible, printed seed.

HYPOTHESIS_PROFILE=ci (default) keeps the suite fast on a 2-core CPU; HYPOTHESIS_PROFILE=thorough
is for long nightly runs; HYPOTHESIS_PROFILE=gpu (4 examples per property) is what the GPU driver's
``alltests`` stage uses, where each new shape costs a kernel compilation; OSDN_MAX_EXAMPLES=N sets the number of
examples of whichever profile is loaded. Every run uses one seed, printed in the header and again after a
failure; rerun with ``--hypothesis-seed=N`` (or OSDN_HYPOTHESIS_SEED=N) to replay it.
"""

import os
import random
import shutil
import sys
from pathlib import Path

# Without a CUDA GPU the Triton kernels run in the interpreter; this must be set before triton
# decorates any kernel, i.e. before osdn_fast is imported by a test module.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A pytest-xdist worker (`make test` runs one per core) gets one thread for torch and the BLAS behind NumPy,
# so that the workers do not oversubscribe the cores; an OMP_NUM_THREADS already set wins. Neither library is
# imported yet in a worker when this runs, so the variable takes effect.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hypothesis import HealthCheck, core, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/strategies.py, tests/launches.py

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=12, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
# on a GPU every new shape compiles the kernels (seconds each): 12 examples per property did not fit a 300 s stage
settings.register_profile("gpu", max_examples=4, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# OSDN_MAX_EXAMPLES=N: the loaded profile with N examples per property (e.g. many seeds' worth of one property on a GPU)
if os.environ.get("OSDN_MAX_EXAMPLES"):
    settings.register_profile("max-examples", parent=settings(), max_examples=int(os.environ["OSDN_MAX_EXAMPLES"]))
    settings.load_profile("max-examples")

_SEED = None


def pytest_configure(config):
    global _SEED
    opt = config.getoption("--hypothesis-seed", default=None)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's seed, not a seed of its own
        _SEED = int(config.workerinput["osdn_hypothesis_seed"])
    elif opt is not None:
        _SEED = int(opt)
    else:
        _SEED = int(os.environ.get("OSDN_HYPOTHESIS_SEED", random.randrange(2**31)))
    core.global_force_seed = _SEED


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist (controller side): hand the seed printed in the header to every worker."""
    node.workerinput["osdn_hypothesis_seed"] = _SEED


def pytest_report_header(config):
    return (f"hypothesis profile {settings.get_current_profile_name()!r}, seed {_SEED} "
            f"(replay: --hypothesis-seed={_SEED})")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus not in (0, 5):
        terminalreporter.write_line(
            f"Hypothesis seed of this run: {_SEED}; replay with --hypothesis-seed={_SEED} "
            f"(profile {settings.get_current_profile_name()!r})")
