#!/usr/bin/env bash
# The EFM (gray) table: FP32 vs INT8 (QDR) vs INT8 (ONNX Runtime PTQ) on Set12 and BSD68 at sigma 15 / 25 / 50, all
# run by ONNX Runtime, with speed, and the per-layer sensitivity of the QDR network (Set12, sigma 25, 4 images).
# Needs the runs of options/qdr_denoise_bsd68.yml (the FP32 network at the switch, models/net_g_fp32.pth) and
# options/qdr_denoise_bsd68_ort.yml (the QDR network for ONNX Runtime); it trains them if they are missing.
# The network was trained at sigma 25 only: the sigma 15 / 50 rows show it outside its training noise.
#   bash benchmarks/efm_gray.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/out
[ -f experiments/qdr_denoise_bsd68/models/net_g_latest.pth ] || basicsr train -opt options/qdr_denoise_bsd68.yml
[ -f experiments/qdr_denoise_bsd68_ort/models/net_g_latest.pth ] || basicsr train -opt options/qdr_denoise_bsd68_ort.yml
opt=options/qdr_denoise_bsd68_ort.yml
fp32=experiments/qdr_denoise_bsd68/models/net_g_fp32.pth
qdr=experiments/qdr_denoise_bsd68_ort/models/net_g_latest.pth
bash benchmarks/efm_table.sh "$opt" "$fp32" "$qdr" efm_gray Set12 BSD68   # the QDR run's FP32 teacher vs QDR vs PTQ
basicsr bench -opt "$opt" --model "qdr_pytorch=$qdr" --datasets Set12 --sigmas 25 --max-images 4 --no-speed \
  --sensitivity qdr_pytorch --out "$out/efm_gray_sensitivity" --overwrite
