export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# Debug sweep of value-block widths for the 16-bit state kernels (reports/gpu-run-NVIDIA-H100-80GB-HBM3.log, run 4).
t() { echo "== $*"; env "$@" timeout 60 python3 osdn_fast/_gpu_debug.py bf16 128 chunk 2>&1 | grep -v Warn | tail -4; }
t OSDN_BV=64 OSDN_FWD_WARPS=4
t OSDN_BV=64 OSDN_FWD_WARPS=8
t OSDN_BV=32 OSDN_FWD_STAGES=2
t OSDN_BV=32 OSDN_FWD_WARPS=8
t OSDN_BV=16 OSDN_FWD_WARPS=4
t OSDN_BV=128 OSDN_FWD_WARPS=8 OSDN_BWD_WARPS=8
