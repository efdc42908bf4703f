#!/usr/bin/env bash
# The restoration-task tables: for each task, the colour EFM in FP32, ONNX Runtime's PTQ of it (minmax, percentile),
# plain QAT and QDR INT8, all as ONNX files run by ONNX Runtime, benched on the task's test set (docs/tasks.md); then
# the fair FP32 reference: the recipe trained in FP32 for all its 1500 iterations (same data, schedule and seed),
# benched beside the 1200-iteration FP32 teacher (benchmarks/tasks_summary.py --long-bench benchmarks/out/tasks).
# Trains options/tasks/<task>_full.yml, options/tasks/ablation/<task>_qat.yml and the FP32 run if their final
# checkpoints are missing. Quality only (--no-speed): the speed figures come from benchmarks/speed_ratio.py on an
# idle machine.
#   bash benchmarks/tasks.sh [derain] [dehaze] [lowlight] [denoise]      (default: all four)
# writes benchmarks/out/tasks/<task>_{fp32,ptq_minmax,ptq_percentile,qat_int8,qdr_int8,fp32_1500}.onnx,
# benchmarks/out/tasks/<task>/bench.* (with the side-by-side pictures) and benchmarks/out/tasks/<task>_fp32_1500/bench.*
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/task_sets.sh
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=("${TASKS[@]}")
out=benchmarks/out/tasks
mkdir -p "$out"
for task in "${tasks[@]}"; do
  task_sets "$task"
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
  [ -f "experiments/task_${task}_fp32/models/net_g_latest.pth" ] ||
    basicsr train -opt "$opt" --force_yml "name=task_${task}_fp32" train:fp32_warmup_iter=1500
  basicsr export -opt "$opt" --ckpt "experiments/task_${task}_fp32/models/net_g_latest.pth" --fp32 \
    --out "$out/${task}_fp32_1500.onnx" --overwrite
  basicsr bench -opt "$opt" --model "fp32_1500=$out/${task}_fp32_1500.onnx" --model "fp32=$out/${task}_fp32.onnx" \
    --reference fp32 "${sets[@]}" --no-speed --pictures 0 --out "$out/${task}_fp32_1500" --overwrite
done
