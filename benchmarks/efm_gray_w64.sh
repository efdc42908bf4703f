#!/usr/bin/env bash
# The width-64 EFM (gray) table: FP32 vs INT8 (QDR) vs INT8 (ONNX Runtime PTQ) on Set12 and BSD68 at sigma 15 / 25 /
# 50, all run by ONNX Runtime, with speed (the width-32 EFM runs 1.6x faster in INT8 here, the width-64 one 2.55x:
# benchmarks/RESULTS.md, "Speed in ONNX Runtime"). Trains options/qdr_denoise_bsd68_w64.yml first, resuming an
# interrupted run (47 min on 2 cores), then exports, quantizes with PTQ and benches (benchmarks/efm_table.sh).
#   bash benchmarks/efm_gray_w64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
opt=options/qdr_denoise_bsd68_w64.yml
run=experiments/qdr_denoise_bsd68_w64
[ -f "$run/models/net_g_latest.pth" ] || basicsr train -opt "$opt" --auto_resume
bash benchmarks/efm_table.sh "$opt" "$run/models/net_g_fp32.pth" "$run/models/net_g_latest.pth" efm_gray_w64 Set12 BSD68
