#!/usr/bin/env bash
# The restoration-task tables: for each task, the colour EFM in FP32, ONNX Runtime's PTQ of it (minmax, percentile),
# plain QAT and QDR INT8, all as ONNX files run by ONNX Runtime, benched on the task's test set (docs/tasks.md).
# Trains options/tasks/<task>_full.yml and options/tasks/ablation/<task>_qat.yml if their final checkpoints are
# missing. Quality only (--no-speed): the speed figures come from benchmarks/speed_ratio.py on an idle machine.
#   bash benchmarks/tasks.sh [derain] [dehaze] [lowlight] [denoise]      (default: all four)
# writes benchmarks/out/tasks/<task>_{fp32,ptq_minmax,ptq_percentile,qat_int8,qdr_int8}.onnx and
# benchmarks/out/tasks/<task>/bench.* (with the side-by-side pictures)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=(derain dehaze lowlight denoise)
out=benchmarks/out/tasks
mkdir -p "$out"
for task in "${tasks[@]}"; do
  case "$task" in
    derain|dehaze|lowlight) sets=(--task "$task") ;;
    denoise) sets=(--task denoise --datasets CBSD68 --sigmas 25) ;;
    *) echo "unknown task '$task': choose from derain, dehaze, lowlight, denoise" >&2; exit 2 ;;
  esac
  opt=options/tasks/${task}_full.yml
  [ -f "experiments/task_$task/models/net_g_latest.pth" ] || basicsr train -opt "$opt"
  [ -f "experiments/task_${task}_qat/models/net_g_latest.pth" ] || basicsr train -opt "options/tasks/ablation/${task}_qat.yml"
  fp32=experiments/task_$task/models/net_g_fp32.pth
  basicsr export -opt "$opt" --ckpt "$fp32" --fp32 --out "$out/${task}_fp32.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "experiments/task_$task/models/net_g_latest.pth" --target onnxruntime \
    --out "$out/${task}_qdr_int8.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "experiments/task_${task}_qat/models/net_g_latest.pth" --target onnxruntime \
    --out "$out/${task}_qat_int8.onnx" --overwrite
  models=(--model "fp32=$out/${task}_fp32.onnx")
  for calib in minmax percentile; do
    basicsr ptq -opt "$opt" --ckpt "$fp32" --calib "$calib" --out "$out/${task}_ptq_$calib.onnx" --overwrite
    models+=(--model "ptq_$calib=$out/${task}_ptq_$calib.onnx")
  done
  models+=(--model "qat=$out/${task}_qat_int8.onnx" --model "qdr=$out/${task}_qdr_int8.onnx")
  basicsr bench -opt "$opt" "${models[@]}" "${sets[@]}" --reference fp32 --no-speed --out "$out/$task" --overwrite
done
