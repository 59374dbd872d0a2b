"""CPU benchmarks of the float64 reference (pytest-benchmark; not timed tests).

Skipped in the default test run (``--benchmark-skip`` in pyproject); run them with
``make bench-ref``. Size from issue 2: B=2, H=4, T=4096, K=V=64, gates and APF on.
"""

import numpy as np
import pytest

from osdn_ref import chunkwise_osdn, recurrent_osdn

B, T, H, K, V = 2, 4096, 4, 64, 64


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((B, T, H, K))
    return dict(q=rng.standard_normal((B, T, H, K)), k=k / np.linalg.norm(k, axis=-1, keepdims=True),
                v=rng.standard_normal((B, T, H, V)), beta=rng.uniform(0, 1, (B, T, H)),
                g=-rng.uniform(0, 0.1, (B, T, H)), alpha=rng.uniform(0.9, 1, (B, T, H)), eta=0.5,
                output_final_state=True)


def test_bench_recurrent_reference(benchmark, problem):
    benchmark.pedantic(recurrent_osdn, kwargs=problem, rounds=3, iterations=1)


@pytest.mark.parametrize("chunk_size", [64])
def test_bench_chunkwise_reference(benchmark, problem, chunk_size):
    benchmark.pedantic(chunkwise_osdn, kwargs=dict(problem, chunk_size=chunk_size), rounds=3, iterations=1)
