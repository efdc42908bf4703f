#!/usr/bin/env bash
# The fair FP32 reference of the task tables: each recipe trained in FP32 for all its iterations (the INT8 students
# train 1200 FP32 + 300 QAT iterations; this network trains 1500 FP32 iterations with the same data, schedule and
# seed), exported and benched beside the 1200-iteration FP32 network. benchmarks/tasks_summary.py --long-bench
# benchmarks/out/tasks adds it to the summary.
#   bash benchmarks/tasks_fp32_long.sh [derain] [dehaze] [lowlight] [denoise]      (default: all four)
# writes benchmarks/out/tasks/<task>_fp32_1500.onnx and benchmarks/out/tasks/<task>_fp32_1500/bench.*
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=(derain dehaze lowlight denoise)
out=benchmarks/out/tasks
for task in "${tasks[@]}"; do
  case "$task" in
    derain|dehaze|lowlight) sets=(--task "$task") ;;
    denoise) sets=(--task denoise --datasets CBSD68 --sigmas 25) ;;
    *) echo "unknown task '$task': choose from derain, dehaze, lowlight, denoise" >&2; exit 2 ;;
  esac
  opt=options/tasks/${task}_full.yml
  [ -f "experiments/task_${task}_fp32/models/net_g_latest.pth" ] ||
    basicsr train -opt "$opt" --force_yml "name=task_${task}_fp32" train:fp32_warmup_iter=1500
  basicsr export -opt "$opt" --ckpt "experiments/task_${task}_fp32/models/net_g_latest.pth" --fp32 \
    --out "$out/${task}_fp32_1500.onnx" --overwrite
  basicsr bench -opt "$opt" --model "fp32_1500=$out/${task}_fp32_1500.onnx" --model "fp32=$out/${task}_fp32.onnx" \
    --reference fp32 "${sets[@]}" --no-speed --pictures 0 --out "$out/${task}_fp32_1500" --overwrite
done
