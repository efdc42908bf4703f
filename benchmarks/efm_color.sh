#!/usr/bin/env bash
# The EFM (colour) table: FP32 vs INT8 (QDR) vs INT8 (ONNX Runtime PTQ) on CBSD68 and McMaster at sigma 15 / 25 / 50,
# all run by ONNX Runtime, with speed. Trains options/qdr_denoise_color.yml if its final checkpoint is missing
# (Set14, blind sigma 0-55; the FP32 rows are its network at the switch to QAT, models/net_g_fp32.pth).
# Run it on an otherwise idle machine: the FPS column is timed.
#   bash benchmarks/efm_color.sh
set -euo pipefail
cd "$(dirname "$0")/.."
opt=options/qdr_denoise_color.yml
[ -f experiments/qdr_denoise_color/models/net_g_latest.pth ] || basicsr train -opt "$opt"
fp32=experiments/qdr_denoise_color/models/net_g_fp32.pth
qdr=experiments/qdr_denoise_color/models/net_g_latest.pth
bash benchmarks/efm_table.sh "$opt" "$fp32" "$qdr" efm_color CBSD68 McMaster
