#!/usr/bin/env bash
# The DnCNN-S (sigma 25) table, end to end on a clean clone with ../shared beside it:
#   convert the published weights -> QDR training (options/qdr_dncnn_sigma25.yml, about 20 min on 2 cores) -> export
#   -> ONNX Runtime PTQ (minmax / percentile / entropy) -> bench on BSD68 and Set12 in ONNX Runtime.
# It leaves the measured files at benchmarks/out/dncnn_sigma25_fp32.onnx and dncnn_sigma25_qdr_int8.onnx (ONNX
# Runtime target; input "input", output "output", N x 1 x H x W in [0, 1]) and the table in benchmarks/out/dncnn_sigma25/.
#   bash benchmarks/dncnn_sigma25.sh              # the QDR run, PTQ and the bench
#   bash benchmarks/dncnn_sigma25.sh --ablation   # also the five 300-iteration ablation runs, in the same table
#   bash benchmarks/dncnn_sigma25.sh --sensitivity  # also per-layer sensitivity of the FP32 network (Set12, 4 images)
# Only ONNX Runtime sessions are timed in the bench process (a PyTorch model timed first skews the ORT timings).
# A finished training (its net_g_latest.pth) is reused, not repeated; delete experiments/<name> to redo it.
# Run it on an otherwise idle machine: the FPS column is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
ablation=0 sensitivity=0
for arg in "$@"; do
  case "$arg" in
    --ablation) ablation=1 ;;
    --sensitivity) sensitivity=1 ;;
    *) echo "dncnn_sigma25.sh: unknown argument $arg (use --ablation, --sensitivity)" >&2; exit 2 ;;
  esac
done
opt=options/qdr_dncnn_sigma25.yml
out=benchmarks/out
pretrained=experiments/pretrained_models/dncnn_sigma25.pth
mkdir -p "$out"

[ -f "$pretrained" ] || python tools/convert_dncnn.py ../shared/weights/DnCNN/dncnn_pytorch_sigma25_model.pth "$pretrained"

train() {  # train <options file> <experiment name>: unless its final checkpoint exists
  [ -f "experiments/$2/models/net_g_latest.pth" ] || basicsr train -opt "$1"
}

train "$opt" qdr_dncnn_sigma25
basicsr export -opt "$opt" --ckpt "$pretrained" --fp32 --out "$out/dncnn_sigma25_fp32.onnx" --overwrite
basicsr export -opt "$opt" --ckpt experiments/qdr_dncnn_sigma25/models/net_g_latest.pth --target onnxruntime \
  --out "$out/dncnn_sigma25_qdr_int8.onnx" --overwrite
models=(--model "fp32=$out/dncnn_sigma25_fp32.onnx")
for calib in minmax percentile entropy; do
  basicsr ptq -opt "$opt" --ckpt "$pretrained" --calib "$calib" --out "$out/dncnn_sigma25_ptq_$calib.onnx" --overwrite
  models+=(--model "ptq_$calib=$out/dncnn_sigma25_ptq_$calib.onnx")
done
if [ "$ablation" = 1 ]; then
  for v in qat qat_okd qat_deckd qdr_fixed qdr; do
    train "options/ablation/dncnn_sigma25_$v.yml" "ablation_dncnn_sigma25_$v"
    basicsr export -opt "$opt" --ckpt "experiments/ablation_dncnn_sigma25_$v/models/net_g_latest.pth" \
      --target onnxruntime --out "$out/dncnn_sigma25_ablation_$v.onnx" --overwrite
    models+=(--model "ablation_$v=$out/dncnn_sigma25_ablation_$v.onnx")
  done
fi
models+=(--model "qdr=$out/dncnn_sigma25_qdr_int8.onnx")
basicsr bench -opt "$opt" "${models[@]}" --reference fp32 --datasets BSD68 Set12 --sigmas 25 --out "$out/dncnn_sigma25" --overwrite
if [ "$sensitivity" = 1 ]; then  # the published FP32 network, quantized with the options' quant block, one layer at a time
  basicsr bench -opt "$opt" --model "fp32_pytorch=$pretrained" --datasets Set12 --sigmas 25 --max-images 4 --no-speed \
    --sensitivity fp32_pytorch --out "$out/dncnn_sigma25_sensitivity" --overwrite
fi
