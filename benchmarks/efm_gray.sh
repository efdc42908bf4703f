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
mkdir -p "$out"
[ -f experiments/qdr_denoise_bsd68/models/net_g_latest.pth ] || basicsr train -opt options/qdr_denoise_bsd68.yml
[ -f experiments/qdr_denoise_bsd68_ort/models/net_g_latest.pth ] || basicsr train -opt options/qdr_denoise_bsd68_ort.yml
opt=options/qdr_denoise_bsd68_ort.yml
fp32=experiments/qdr_denoise_bsd68/models/net_g_fp32.pth
qdr=experiments/qdr_denoise_bsd68_ort/models/net_g_latest.pth
basicsr export -opt "$opt" --ckpt "$fp32" --fp32 --out "$out/efm_gray_fp32.onnx"   # the QDR run's FP32 teacher
basicsr export -opt "$opt" --ckpt "$qdr" --target onnxruntime --out "$out/efm_gray_qdr_int8.onnx"
models=(--model "fp32=$out/efm_gray_fp32.onnx")
for calib in minmax percentile; do
  basicsr ptq -opt "$opt" --ckpt "$fp32" --calib "$calib" --out "$out/efm_gray_ptq_$calib.onnx"
  models+=(--model "ptq_$calib=$out/efm_gray_ptq_$calib.onnx")
done
models+=(--model "qdr=$out/efm_gray_qdr_int8.onnx")
basicsr bench -opt "$opt" "${models[@]}" --reference fp32 --datasets Set12 BSD68 --sigmas 15 25 50 \
  --out "$out/efm_gray"
basicsr bench -opt "$opt" --model "qdr_pytorch=$qdr" --datasets Set12 --sigmas 25 --max-images 4 --no-speed \
  --sensitivity qdr_pytorch --out "$out/efm_gray_sensitivity"
