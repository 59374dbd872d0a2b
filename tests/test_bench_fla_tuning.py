"""``osdn bench`` gives fla's autotuned kernels a fresh tuning for every shape: fla's autotune keys leave out B and T,
so without the reset a later shape ran the configs tuned at an earlier one (osdn_fast/bench.py)."""

import types

import triton
import triton.language as tl

from osdn_fast.bench import _fla_tuned_configs, _reset_fla_tuning


@triton.jit
def _plain(x):
    tl.store(x, 1.0)


def _module():
    """A stand-in for an fla module: an autotuned kernel, one behind a heuristics wrapper, and a plain jit kernel."""
    configs = [triton.Config({}, num_warps=2), triton.Config({}, num_warps=4)]

    @triton.autotune(configs=configs, key=["H"])
    @triton.jit
    def tuned(x, H: tl.constexpr):
        tl.store(x, 1.0)

    @triton.heuristics({"EVEN": lambda args: True})
    @triton.autotune(configs=configs, key=["H"])
    @triton.jit
    def wrapped(x, H: tl.constexpr, EVEN: tl.constexpr):
        tl.store(x, 1.0)

    mod = types.ModuleType("fla.ops.fake")
    mod.tuned, mod.wrapped, mod.plain, mod.number = tuned, wrapped, _plain, 3
    return mod


def test_every_autotuner_of_the_modules_forgets_its_tuned_configs():
    mod = _module()
    mod.tuned.cache[(16,)] = mod.tuned.configs[0]
    mod.wrapped.fn.cache[(16,)] = mod.wrapped.fn.configs[1]
    assert _fla_tuned_configs([mod]) == {"tuned": [str(mod.tuned.configs[0])],
                                        "wrapped": [str(mod.wrapped.fn.configs[1])]}
    assert _reset_fla_tuning([mod]) == 2
    assert _fla_tuned_configs([mod]) == {}
    assert mod.tuned.cache == {} and mod.wrapped.fn.cache == {}


def test_a_module_without_autotuners_is_left_alone():
    mod = types.ModuleType("fla.utils.fake")
    mod.plain, mod.value = _plain, {"H": 16}
    assert _reset_fla_tuning([mod]) == 0
    assert mod.value == {"H": 16}
