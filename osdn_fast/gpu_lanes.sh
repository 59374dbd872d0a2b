#!/bin/bash
# Side-by-side GPU lanes on one multi-GPU host: bash osdn_fast/gpu_lanes.sh 'COMMANDS FOR GPU 0' 'COMMANDS FOR GPU 1' ...
# Runs `gpu_run.sh setup` once, then lane i's commands with CUDA_VISIBLE_DEVICES=i and OUT=/tmp/lanes/gi (each lane its
# own log, gpu_run.sh stages or any command), waits for all, then brings back what the device returns (at most 8 files
# a call): $OUT/gpu-run.log (setup and every lane's log, in lane order), up to 6 reports (*.md, *.json written by the
# lanes, newest first, named gI-FILE) and $OUT/lanes.tgz (everything the lanes wrote), and prints a digest of the log. Example (tenth session, call 2):
#   bash osdn_fast/gpu_lanes.sh 'bash osdn_fast/gpu_run.sh bench' \
#     'AB_SHAPES="1,32768,16,128" AB_CONFIGS="new= dhw8=OSDN_BWD_DH_WARPS=8" bash osdn_fast/gpu_run.sh abenv'
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=${LANES_DIR:-/tmp/lanes}; rm -rf "$L"; mkdir -p "$L/setup"
OUT=$L/setup bash osdn_fast/gpu_run.sh setup
cmds=("$@")
i=0
for cmd in "${cmds[@]}"; do
  mkdir -p "$L/g$i"
  (export CUDA_VISIBLE_DEVICES=$i OUT=$L/g$i; bash -c "$cmd") > "$L/g$i/lane-stdout.txt" 2>&1 &
  i=$((i + 1))
done
wait
{ cat "$L/setup/gpu-run.log"
  for ((j = 0; j < i; j++)); do echo; echo "########## lane g$j (GPU $j): ${cmds[j]}"; cat "$L/g$j/gpu-run.log" 2>/dev/null
    echo "---------- lane g$j stdout and stderr"; cat "$L/g$j/lane-stdout.txt"; done; } > "$OUT/gpu-run.log"
ls -t $(find "$L" -name '*.md' -o -name '*.json' | grep -v lane-stdout) 2>/dev/null | head -6 | while read -r f; do
  cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done
tar czf "$OUT/lanes.tgz" -C "$L" .
ls "$OUT"
# a digest for the caller's screen: tables, test summaries, errors
grep -a -h -E '^\||^=== |passed|failed|FAILED|Error|error:' "$OUT/gpu-run.log" | tail -80
