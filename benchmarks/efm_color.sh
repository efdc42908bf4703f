#!/usr/bin/env bash
# The EFM (colour) table: FP32 vs INT8 (QDR) vs INT8 (ONNX Runtime PTQ) on CBSD68 and McMaster at sigma 15 / 25 / 50,
# all run by ONNX Runtime, with speed. Trains options/qdr_denoise_color.yml if its final checkpoint is missing
# (Set14, blind sigma 0-55; the FP32 rows are its network at the switch to QAT, models/net_g_fp32.pth).
# Run it on an otherwise idle machine: the FPS column is timed.
#   bash benchmarks/efm_color.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/out
opt=options/qdr_denoise_color.yml
mkdir -p "$out"
[ -f experiments/qdr_denoise_color/models/net_g_latest.pth ] || basicsr train -opt "$opt"
fp32=experiments/qdr_denoise_color/models/net_g_fp32.pth
qdr=experiments/qdr_denoise_color/models/net_g_latest.pth
basicsr export -opt "$opt" --ckpt "$fp32" --fp32 --out "$out/efm_color_fp32.onnx"
basicsr export -opt "$opt" --ckpt "$qdr" --target onnxruntime --out "$out/efm_color_qdr_int8.onnx"
models=(--model "fp32=$out/efm_color_fp32.onnx")
for calib in minmax percentile; do
  basicsr ptq -opt "$opt" --ckpt "$fp32" --calib "$calib" --out "$out/efm_color_ptq_$calib.onnx"
  models+=(--model "ptq_$calib=$out/efm_color_ptq_$calib.onnx")
done
models+=(--model "qdr=$out/efm_color_qdr_int8.onnx")
basicsr bench -opt "$opt" "${models[@]}" --reference fp32 --datasets CBSD68 McMaster --sigmas 15 25 50 \
  --out "$out/efm_color"
