#!/usr/bin/env bash
# The task recipes with the faster EFM layout (network_g: ldg: false, up: shuffle; as in
# options/qdr_denoise_bsd68_fast.yml) beside the default layout's files with the integer-kernel points
# (benchmarks/tasks_integer_points.sh): quality on the task's test set and speed, interleaved. Idle machine.
#   bash benchmarks/tasks_fast_layout.sh [derain] [dehaze] [lowlight] [denoise]      (default: all four)
# Trains options/tasks/<task>_full.yml with the layout (experiments/task_<task>_fast/; skipped when its final checkpoint
# exists), writes benchmarks/out/tasks/<task>_fast_{fp32,qdr_int8}.onnx, benchmarks/out/tasks/<task>_fast/bench.*
# (copied to benchmarks/results/tasks_fast/<task>_bench.*) and benchmarks/results/tasks_fast/<task>_speed.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/task_sets.sh
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=("${TASKS[@]}")
out=benchmarks/out/tasks
mkdir -p "$out" benchmarks/results/tasks_fast
for task in "${tasks[@]}"; do
  task_sets "$task"
  for f in "$out/${task}_fp32.onnx" "$out/${task}_qdr_int8_ip.onnx"; do
    [ -f "$f" ] || { echo "$f is missing: run benchmarks/tasks.sh and benchmarks/tasks_integer_points.sh first" >&2
                     exit 2; }
  done
  opt=$out/${task}_fast.yml  # the recipe with the layout: what training and basicsr export read
  python -c "import sys, yaml; o = yaml.safe_load(open(sys.argv[1])); o['network_g'].update(ldg=False, up='shuffle')
o['name'] = sys.argv[3]; yaml.safe_dump(o, open(sys.argv[2], 'w'), sort_keys=False)" \
    "options/tasks/${task}_full.yml" "$opt" "task_${task}_fast"
  models=experiments/task_${task}_fast/models
  [ -f "$models/net_g_latest.pth" ] || basicsr train -opt "$opt" --auto_resume
  basicsr export -opt "$opt" --ckpt "$models/net_g_fp32.pth" --fp32 --out "$out/${task}_fast_fp32.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "$models/net_g_latest.pth" --target onnxruntime \
    --out "$out/${task}_fast_qdr_int8.onnx" --overwrite
  basicsr bench -opt "$opt" --model "fp32=$out/${task}_fp32.onnx" --model "qdr_ip=$out/${task}_qdr_int8_ip.onnx" \
    --model "fast_fp32=$out/${task}_fast_fp32.onnx" --model "fast_qdr=$out/${task}_fast_qdr_int8.onnx" "${sets[@]}" \
    --reference fp32 --no-speed --pictures 0 --out "$out/${task}_fast" --overwrite
  cp "$out/${task}_fast/bench.json" "benchmarks/results/tasks_fast/${task}_bench.json"
  cp "$out/${task}_fast/bench.md" "benchmarks/results/tasks_fast/${task}_bench.md"
  python benchmarks/speed_ratio.py "$out/${task}_fp32.onnx" "$out/${task}_qdr_int8_ip.onnx" \
    "$out/${task}_fast_fp32.onnx" "$out/${task}_fast_qdr_int8.onnx" --size 256 --threads 2 --repeats 5 --runs 100 \
    --rounds 5 --pause 5 --name "tasks_fast/${task}_speed"
done
