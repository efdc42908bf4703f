#!/usr/bin/env bash
# The super-resolution table: EDSR-small x4 and SRVGGNetCompact x4, trained on CBSD68 + McMaster (the
# colour images at hand) with options/sr/*_full.yml, FP32 vs INT8 (QDR) vs INT8 (ONNX Runtime PTQ) on Set5 / Set14,
# Y-channel PSNR / SSIM with crop_border = 4, all run by ONNX Runtime, with speed.
#   bash benchmarks/sr_x4.sh
# A finished training (its net_g_latest.pth) is reused, not repeated. The FP32 model is the network at the start
# of QAT (models/net_g_fp32.pth, the teacher); PTQ quantizes that same network. Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/out
mkdir -p "$out"
for name in edsr_small_x4 srvgg_x4; do
  opt="options/sr/qdr_${name}_full.yml"
  models="experiments/qdr_${name}_full/models"
  [ -f "$models/net_g_latest.pth" ] || basicsr train -opt "$opt"
  basicsr export -opt "$opt" --ckpt "$models/net_g_fp32.pth" --fp32 --out "$out/sr_${name}_fp32.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "$models/net_g_latest.pth" --target onnxruntime --out "$out/sr_${name}_qdr_int8.onnx" --overwrite
  ptq=()
  for calib in minmax percentile; do
    basicsr ptq -opt "$opt" --ckpt "$models/net_g_fp32.pth" --calib "$calib" --out "$out/sr_${name}_ptq_$calib.onnx" --overwrite
    ptq+=(--model "ptq_$calib=$out/sr_${name}_ptq_$calib.onnx")
  done
  basicsr bench -opt "$opt" --task sr --scale 4 --datasets Set5 Set14 --reference fp32 \
    --model "fp32=$out/sr_${name}_fp32.onnx" "${ptq[@]}" --model "qdr=$out/sr_${name}_qdr_int8.onnx" \
    --out "$out/sr_$name" --overwrite
done
