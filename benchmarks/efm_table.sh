#!/usr/bin/env bash
# One EFM table: export the FP32 and QDR checkpoints, ONNX Runtime PTQ (minmax, percentile) of the FP32 one, then
# `basicsr bench` of the four ONNX files at sigma 15 / 25 / 50. Called by efm_gray.sh and efm_color.sh.
#   bash benchmarks/efm_table.sh <options> <fp32.pth> <qdr.pth> <name> <dataset> [<dataset> ...]
# writes benchmarks/out/<name>_{fp32,qdr_int8,ptq_minmax,ptq_percentile}.onnx and benchmarks/out/<name>/bench.*
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 5 ] || { echo "usage: efm_table.sh <options> <fp32.pth> <qdr.pth> <name> <dataset> [...]" >&2; exit 2; }
opt=$1 fp32=$2 qdr=$3 name=$4
shift 4
out=benchmarks/out
mkdir -p "$out"
basicsr export -opt "$opt" --ckpt "$fp32" --fp32 --out "$out/${name}_fp32.onnx" --overwrite
basicsr export -opt "$opt" --ckpt "$qdr" --target onnxruntime --out "$out/${name}_qdr_int8.onnx" --overwrite
models=(--model "fp32=$out/${name}_fp32.onnx")
for calib in minmax percentile; do
  basicsr ptq -opt "$opt" --ckpt "$fp32" --calib "$calib" --out "$out/${name}_ptq_$calib.onnx" --overwrite
  models+=(--model "ptq_$calib=$out/${name}_ptq_$calib.onnx")
done
models+=(--model "qdr=$out/${name}_qdr_int8.onnx")
basicsr bench -opt "$opt" "${models[@]}" --reference fp32 --datasets "$@" --sigmas 15 25 50 --out "$out/$name" --overwrite
