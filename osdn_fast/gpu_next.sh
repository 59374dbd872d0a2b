#!/bin/bash
# The GPU calls still owed, most important first (osdn_fast/NOTES.md, "Next steps" item 0): bash osdn_fast/gpu_next.sh N
# Each call fits the device's 600 s limit a command with its own step limits; carry .whl (the fla-core and
# flash-linear-attention 0.6.0 wheels and COMMIT, `git rev-parse --short HEAD > .whl/COMMIT`). Logs: $OUT/gpu-run.log,
# reports under $OUT (copy them to reports/ with the card's name, as the earlier runs' logs are).
#   1: the kernels not yet run on a GPU, against float64 (the full dh walk's row scalings, which the batched shapes
#      run; the float16 transposed segment maps and their fallback; the maps on a second stream), then same-run A/Bs at
#      the long shape: the float16 transposed maps (OSDN_DSCAN_MAP_F16: 8 and 16 warps, Ψ's rows in blocks of 64 at 4
#      and 8 warps, on a second stream beside the offsets pass) against the default, and, gated, the per-sequence sum
#      over key blocks against the layout before it (sum1). Left for later: the float32 maps at 16 warps
#      (OSDN_DSCAN_MAP_WARPS=16) and dul's loads in order (OSDN_DUL_LOADS_FIRST=0).
#   2: `osdn bench` (make the winners of call 1 the defaults and commit first, so that the report names the kernels
#      it timed) and `osdn tolerance` at the issue's shape (B=2, T=2048, H=4, K=V=128; all dtypes, full config).
#   3: `osdn tolerance` of the plain config, and bfloat16 and float16 at T=16384 (where both levels of the scan and of
#      the state walks run).
#   4: the fla cross-check (fla autotunes in every fresh process: several minutes).
set -o pipefail
here=$(dirname "$0")
run() { bash "$here/gpu_run.sh" "$@"; }
case ${1:?call number: 1 to 4} in
  1)
    run setup
    PYTEST_ARGS="tests/test_fast_dscan_chunk.py tests/test_fast_chunk.py tests/test_fast_state_bwd.py -k 'full_walks or tiled_dh or float16_transposed or second_stream'" \
      T_PY=200 run pytest
    AB_SHAPES="1,32768,16,128" AB_CONFIGS="default= mapf16=OSDN_DSCAN_MAP_F16=1 \
mapf16w16=OSDN_DSCAN_MAP_F16=1,OSDN_DSCAN_MAP_F16_WARPS=16 mapf16r64=OSDN_DSCAN_MAP_F16=1,OSDN_DSCAN_MAP_F16_ROWS=64 \
mapf16r64w8=OSDN_DSCAN_MAP_F16=1,OSDN_DSCAN_MAP_F16_ROWS=64,OSDN_DSCAN_MAP_F16_WARPS=8 \
mapf16s=OSDN_DSCAN_MAP_F16=1,OSDN_DSCAN_MAP_STREAM=1" T_AB=170 run abenv
    AB_TIME_GATED=1 AB_SHAPES="1,32768,16,128" AB_CONFIGS="default= sum1=OSDN_DSCAN_SUM_BK=128 mapf16=OSDN_DSCAN_MAP_F16=1" \
      T_AB=110 run abenv ;;
  2)
    run setup
    T_BENCH=280 run bench
    TOL_ARGS="--configs full" T_TOL=220 run tolerance ;;
  3)
    run setup
    TOL_ARGS="--configs plain --tag plain" T_TOL=170 run tolerance
    TOL_ARGS="--T 16384 --dtypes bfloat16 float16 --configs full --seeds 0 --tag T16384" T_TOL=220 run tolerance ;;
  4)
    run setup
    PYTEST_ARGS="tests/test_fast_chunk.py -k fla" T_PY=420 run pytest ;;
  *) echo "unknown call $1 (1 to 4)" >&2; exit 2 ;;
esac
