#!/usr/bin/env bash
# The hybrid quality tables (docs/hybrid.md), after benchmarks/hybrid.sh: the Restormer teacher (its FP32 network and
# its QDR INT8 network), the teacher under the hybrids' fine-tuning schedule, and every fine-tuned hybrid (FP32 after
# the end-to-end fine-tuning, QDR INT8), all exported and run by ONNX Runtime on the task's test set (gray_sigma25:
# BSD68 sigma 25; derain: Rain100H, Y channel), against the teacher's FP32 file; then the parity of each INT8 file with
# its PyTorch fake-quant network (benchmarks/onnx_eval.py, the first 4 images of the options' val set). Quality only:
# latency comes from benchmarks/hybrid_latency.py on an idle machine. A hybrid whose training has not finished is
# left out and named. A rerun re-exports only the checkpoints newer than their ONNX files and re-checks parity only
# where its JSON is missing.
#   bash benchmarks/hybrid_bench.sh [gray_sigma25] [derain]      (default: both)
# writes benchmarks/out/hybrid_<task>/*.onnx, benchmarks/results/hybrid_<task>/bench/ (the table, its JSON, one
# side-by-side picture) and benchmarks/results/hybrid_<task>_parity_<model>.json
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=(gray_sigma25 derain)
for task in "${tasks[@]}"; do
  case "$task" in
    gray_sigma25) sets=(--task denoise --datasets BSD68 --sigmas 25) ;;
    derain) sets=(--task derain) ;;
    *) echo "unknown task '$task': choose gray_sigma25 or derain" >&2; exit 2 ;;
  esac
  out=benchmarks/out/hybrid_$task
  mkdir -p "$out"
  models=()
  # name, options file, QDR run folder
  runs=("teacher options/hybrid/restormer_$task.yml experiments/restormer_$task"
        "teacher_tuned options/hybrid/hybrid_$task.yml experiments/hybrid_${task}_teacher")
  for tuned in experiments/hybrid_"$task"/hybrid_*.yml; do
    [ -f "$tuned" ] || continue
    run=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$tuned")
    runs+=("$(basename "$tuned" .yml) $tuned experiments/$run")
  done
  for entry in "${runs[@]}"; do
    read -r name opt run <<< "$entry"
    if [ ! -f "$run/models/net_g_latest.pth" ] || [ ! -f "$run/models/net_g_fp32.pth" ]; then
      echo "$task: $name left out ($run has not finished)" >&2
      continue
    fi
    # an ONNX file newer than its checkpoint is kept: a rerun exports only what has changed
    [ "$out/${name}_fp32.onnx" -nt "$run/models/net_g_fp32.pth" ] ||
      basicsr export -opt "$opt" --ckpt "$run/models/net_g_fp32.pth" --fp32 --out "$out/${name}_fp32.onnx" --overwrite
    [ "$out/${name}_int8.onnx" -nt "$run/models/net_g_latest.pth" ] ||
      basicsr export -opt "$opt" --ckpt "$run/models/net_g_latest.pth" --target onnxruntime \
        --out "$out/${name}_int8.onnx" --overwrite
    models+=(--model "${name}_fp32=$out/${name}_fp32.onnx" --model "${name}_int8=$out/${name}_int8.onnx")
    [ -f "benchmarks/results/hybrid_${task}_parity_$name.json" ] ||
      python benchmarks/onnx_eval.py -opt "$opt" --ckpt "$run/models/net_g_latest.pth" \
        --name "hybrid_${task}_parity_$name" --max-images 4
  done
  basicsr bench "${models[@]}" "${sets[@]}" --reference teacher_fp32 --no-speed --pictures 1 \
    --out "benchmarks/results/hybrid_$task/bench" --overwrite
done
