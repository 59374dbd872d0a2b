#!/bin/bash
# The GPU calls still owed, most important first (osdn_fast/NOTES.md, "Next steps" item 0): bash osdn_fast/gpu_next.sh N
# Each call fits the device's 600 s limit a command with its own step limits; carry .whl (the fla-core and
# flash-linear-attention 0.6.0 wheels and COMMIT, `git rev-parse --short HEAD > .whl/COMMIT`). Logs: $OUT/gpu-run.log,
# reports under $OUT (copy them to reports/ with the card's name, as the earlier runs' logs are).
#   1: the correctness of the default kernels not yet run on a GPU (the full dh walk's row scalings, which the batched
#      shapes run: float16 and bfloat16 against float64), `osdn bench` on the current kernels, and the gated same-run
#      A/B of the per-sequence sum over key blocks (sum1 = the layout before it).
#   2: `osdn tolerance` of the current kernels at the issue's shape (B=2, T=2048, H=4, K=V=128; all dtypes, both
#      configs, seeds 0 and 1), then the A/Bs of the prepared switches at the long shape (16-warp maps, dul's loads).
#   3: the fla cross-check (fla autotunes in every fresh process: several minutes) and `osdn tolerance` bfloat16 and
#      float16 at T=16384, where both levels of the scan and of the state walks run.
set -o pipefail
here=$(dirname "$0")
run() { bash "$here/gpu_run.sh" "$@"; }
case ${1:?call number: 1, 2 or 3} in
  1)
    run setup
    PYTEST_ARGS="tests/test_fast_chunk.py tests/test_fast_state_bwd.py -k 'full_walks or tiled_dh'" \
      T_PY=150 run pytest
    T_BENCH=280 run bench
    AB_TIME_GATED=1 AB_SHAPES="1,32768,16,128" AB_CONFIGS="default= sum1=OSDN_DSCAN_SUM_BK=128" T_AB=100 run abenv ;;
  2)
    run setup
    TOL_ARGS="--configs full" T_TOL=180 run tolerance
    TOL_ARGS="--configs plain --tag plain" T_TOL=160 run tolerance
    AB_SHAPES="1,32768,16,128" AB_CONFIGS="default= map16=OSDN_DSCAN_MAP_WARPS=16 dul0=OSDN_DUL_LOADS_FIRST=0" \
      T_AB=140 run abenv ;;
  3)
    run setup
    PYTEST_ARGS="tests/test_fast_chunk.py -k fla" T_PY=330 run pytest
    TOL_ARGS="--T 16384 --dtypes bfloat16 float16 --configs full --seeds 0 --tag T16384" T_TOL=220 run tolerance ;;
  *) echo "unknown call $1 (1, 2 or 3)" >&2; exit 2 ;;
esac
