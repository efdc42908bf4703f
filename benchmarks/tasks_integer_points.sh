#!/usr/bin/env bash
# The task recipes' QDR stage again with quant.integer_points (the default now): each run resumes the recipe's own
# experiment (experiments/task_<task>, trained by benchmarks/tasks.sh) from its training state at iteration 1000,
# under the name task_<task>_ip, and trains to 1500 (FP32 to 1200, then QDR); its INT8 file is benched beside the
# recipe's earlier QDR file and checked for parity with the PyTorch network (first 5 test images).
#   bash benchmarks/tasks_integer_points.sh [derain] [dehaze] [lowlight] [denoise]
# writes benchmarks/out/tasks/<task>_qdr_int8_ip.onnx, benchmarks/out/tasks/<task>_ip/bench.* and
# benchmarks/results/tasks_ip/<task>_onnx.json; time the files with benchmarks/speed_ratio.py on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/task_sets.sh
out=benchmarks/out/tasks
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=("${TASKS[@]}")
for task in "${tasks[@]}"; do
  task_sets "$task"
  opt=options/tasks/${task}_full.yml
  state=experiments/task_$task/training_states/1000.state
  [ -f "$state" ] || { echo "$state is missing: run bash benchmarks/tasks.sh $task first" >&2; exit 2; }
  if [ ! -d "experiments/task_${task}_ip" ]; then
    mkdir -p "experiments/task_${task}_ip/training_states" "experiments/task_${task}_ip/models"
    cp "$state" "experiments/task_${task}_ip/training_states/"
    cp "experiments/task_$task/models/net_g_1000.pth" "experiments/task_${task}_ip/models/"
  fi
  [ -f experiments/task_${task}_ip/models/net_g_latest.pth ] || basicsr train -opt $opt --auto_resume --force_yml name=task_${task}_ip 'val=~'
  basicsr export -opt $opt --ckpt experiments/task_${task}_ip/models/net_g_latest.pth --target onnxruntime --out $out/${task}_qdr_int8_ip.onnx --overwrite
  basicsr bench -opt $opt --model fp32=$out/${task}_fp32.onnx --model qdr=$out/${task}_qdr_int8.onnx --model qdr_ip=$out/${task}_qdr_int8_ip.onnx "${sets[@]}" --reference fp32 --no-speed --pictures 0 --out $out/${task}_ip --overwrite
  mkdir -p benchmarks/results/tasks_ip
  python benchmarks/onnx_eval.py -opt $opt --ckpt experiments/task_${task}_ip/models/net_g_latest.pth --name tasks_ip/${task}_onnx --max-images 5
done
