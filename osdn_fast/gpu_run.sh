#!/bin/bash
# GPU session driver (device machine): bash osdn_fast/gpu_run.sh STAGE...
# Stages: setup | pytest (PYTEST_ARGS, T_PY) | gputests | alltests | kerneltests | twolevel | tolerance | bench | benchquick | benchold | abdscan | abenv | narrowdot | decodehost | ncu | ncudetail. Logs go to $OUT/gpu-run.log.
# ncu: Nsight Compute profile (not a benchmark) of one chunk_osdn forward+backward at (8, 4096, 16, 128), Triton kernels
# only, clocks left alone (--clock-control none): $OUT/ncu.csv (raw page) and $OUT/ncu.md (osdn_fast/profile_ncu.py).
# fla-core 0.6.0 travels as a wheel in .whl/ (no registry there); fla autotunes in every fresh process (over 100 s for its
# state-adjoint kernel on an H100, run10 log), so give any step that runs fla 300 s or more.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD PYTHONDONTWRITEBYTECODE=1
# the commit whose kernels run (the reports record it; the device's copy of .git is stale): .whl/COMMIT, written here
[ -z "$OSDN_COMMIT" ] && [ -f .whl/COMMIT ] && export OSDN_COMMIT=$(cat .whl/COMMIT)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/gpu-run.log
say() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
for st in "$@"; do
  case $st in
    setup)
      say setup
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core-*.whl 2>&1 | tail -2 | tee -a "$LOG"
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee -a "$LOG"
      python3 -c "import torch,triton,fla;print('torch',torch.__version__,'triton',triton.__version__,'fla',fla.__version__,torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG" ;;
    pytest)
      say "pytest ${PYTEST_ARGS} (Hypothesis profile ${HYPOTHESIS_PROFILE:-gpu}, GPU ${CUDA_VISIBLE_DEVICES:-0})"
      eval "pyargs=(${PYTEST_ARGS})"  # PYTEST_ARGS may quote a -k expression
      HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-gpu} timeout ${T_PY:-300} python3 -m pytest -p no:cacheprovider -q -rs "${pyargs[@]}" 2>&1 | tee -a "$LOG" ;;
    gputests)
      say "pytest -m gpu"
      timeout ${T_TESTS:-200} python3 -m pytest -p no:cacheprovider -m gpu -q -rs ${PYTEST_K:+-k "$PYTEST_K"} tests/test_fast_chunk.py tests/test_fast_recurrent.py 2>&1 | tee -a "$LOG" ;;
    alltests)
      say "pytest tests/test_fast_*.py (all, on the GPU; Hypothesis profile ${HYPOTHESIS_PROFILE:-gpu})"
      HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-gpu} timeout ${T_ALL:-540} python3 -m pytest -p no:cacheprovider -q -rs tests/test_fast_chunk.py tests/test_fast_recurrent.py tests/test_fast_validation.py 2>&1 | tee -a "$LOG" ;;
    tolerance)
      say "osdn tolerance"
      timeout ${T_TOL:-200} python3 -m osdn_ref.cli tolerance --out "$OUT" ${TOL_ARGS} 2>&1 | tee -a "$LOG" ;;
    bench)
      say "osdn bench"
      timeout ${T_BENCH:-540} python3 -m osdn_ref.cli bench --out "$OUT" 2>&1 | tee -a "$LOG" ;;
    benchrest)
      say "osdn bench (decoding step and kernel breakdown only)"
      timeout ${T_BENCH:-100} python3 -m osdn_ref.cli bench --shapes ${BENCH_SHAPES} --out "$OUT" 2>&1 | tee -a "$LOG" ;;
    benchquick)
      say "osdn bench --quick"
      timeout 200 python3 -m osdn_ref.cli bench --quick --out "$OUT" 2>&1 | tee -a "$LOG" ;;
    benchold)
      say "osdn bench --quick with the earlier kernels (token d-scan, fused state backward, row UT inverse)"
      OSDN_DSCAN=token OSDN_STATE_BWD=fused OSDN_WY=rows timeout ${T_BENCH_OLD:-200} python3 -m osdn_ref.cli bench \
        --quick --no-decode --out "$OUT/earlier-kernels" 2>&1 | tee -a "$LOG" ;;
    kerneltests)
      say "pytest: kernel-level comparisons on the GPU (split state backward, chunk d-scan named cases)"
      timeout ${T_KT:-200} python3 -m pytest -p no:cacheprovider -q -rs tests/test_fast_state_bwd.py \
        tests/test_fast_dscan_chunk.py -k "state_bwd or named or unstable" 2>&1 | tee -a "$LOG" ;;
    twolevel)
      say "pytest: the two-level d-scan carry (kernel-level and end to end) and the fla cross-check, on the GPU"
      timeout ${T_TL:-200} python3 -m pytest -p no:cacheprovider -q -rs tests/test_fast_dscan_chunk.py \
        -k "two_level or either_scan or segments" ${HSEED:+--hypothesis-seed=$HSEED} 2>&1 | tee -a "$LOG"
      timeout ${T_FLA:-320} python3 -m pytest -p no:cacheprovider -q -rs tests/test_fast_chunk.py -k fla \
        ${HSEED:+--hypothesis-seed=$HSEED} 2>&1 | tee -a "$LOG" ;;
    abdscan)
      say "d-scan A/B at the three bench shapes: the defaults vs token-serial and scan chunk 32/16 (osdn_fast/_ab_env.py)"
      AB_SHAPES="8,4096,16,128;1,32768,16,128;16,2048,32,64" timeout ${T_AB:-300} python3 osdn_fast/_ab_env.py \
        default= token=OSDN_DSCAN=token c32w4=OSDN_DSCAN_CHUNK=32,OSDN_DSCAN_WARPS=4 \
        c16w2=OSDN_DSCAN_CHUNK=16,OSDN_DSCAN_WARPS=2 2>&1 | tee -a "$LOG" ;;
    abenv)
      say "A/B of env-selected kernel settings (osdn_fast/_ab_env.py): ${AB_CONFIGS}"
      timeout ${T_AB:-300} python3 osdn_fast/_ab_env.py ${AB_CONFIGS} 2>&1 | tee -a "$LOG" ;;
    narrowdot)
      say "narrow 16-bit dot shapes (osdn_fast/_repro_narrow_dot.py): the Triton fault seen with 32-column blocks"
      timeout ${T_ND:-300} python3 osdn_fast/_repro_narrow_dot.py 2>&1 | tee -a "$LOG" ;;
    decodehost)
      say "decoding step: host vs launch vs device time, ours and fla (osdn_fast/_decode_host.py)"
      timeout ${T_DH:-300} python3 -m osdn_fast._decode_host ${DH_N:-2000} 2>&1 | tee -a "$LOG" ;;
    ncudetail)
      # stall reasons, occupancy and memory of the kernels named by NCU_KERNELS (a regex; default the d-scan's), one
      # chunk_osdn forward+backward (NCU_ARGS, e.g. "--B 1 --T 32768"): ncu's detail page as text, $OUT/ncu-detail.txt
      say "ncu detail: ${NCU_KERNELS:-dscan_} (osdn_fast/profile_ncu.py run ${NCU_ARGS})"
      NCU=$(command -v ncu) || NCU=$(ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | sort -V | tail -1)
      [ -n "$NCU" ] && timeout ${T_NCU:-240} "$NCU" --profile-from-start off --clock-control none --target-processes all \
        --kernel-name "regex:${NCU_KERNELS:-dscan_}" --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --page details \
        python3 -m osdn_fast.profile_ncu run ${NCU_ARGS} 2>&1 | tee "$OUT/ncu-detail.txt" ;;
    ncu)
      say "ncu: profile of one chunk_osdn forward+backward, Triton kernels only (osdn_fast/profile_ncu.py)"
      rm -f "$OUT/ncu.csv" "$OUT/ncu.md"
      NCU=$(command -v ncu) || { NCU=$(ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | sort -V | tail -1)
        echo "ncu is not on PATH; using ${NCU:-nothing (none under /opt/nvidia/nsight-compute)}" | tee -a "$LOG"; }
      NCU_CMD=("$NCU" --profile-from-start off --clock-control none --target-processes all --kernel-name "regex:(state|dscan|wy)_"
        --metrics "$(python3 -c 'import osdn_fast.profile_ncu as p; print(",".join(p.METRICS))')"
        --print-units base --csv --page raw --log-file "$OUT/ncu.csv" python3 -m osdn_fast.profile_ncu run ${NCU_ARGS})
      [ -n "$NCU" ] && timeout ${T_NCU:-240} "${NCU_CMD[@]}" 2>&1 | tee -a "$LOG"
      [ -n "$NCU" ] && python3 -m osdn_fast.profile_ncu summarize "$OUT/ncu.csv" --command "${NCU_CMD[*]}" \
        --ncu-version "$("$NCU" --version | tail -1)" --out "$OUT/ncu.md" \
        --device "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')" 2>&1 | tee -a "$LOG"
      [ -f "$OUT/ncu.md" ] && tee -a "$LOG" < "$OUT/ncu.md" ;;
  esac
done
say done
