#!/usr/bin/env bash
# The published restorers in INT8 (docs/archs.md, "Published restorers"): for each model, QDR from the shared weights
# (options/peers/<model>.yml, trained if its final checkpoint is missing), its FP32 file (the published weights as
# they are), ONNX Runtime's PTQ of them (minmax, percentile, entropy; calibrated on the same training crops as QDR)
# and the QDR INT8 files for both targets, all benched by ONNX Runtime on the model's full test set; parity of the
# INT8 files with the PyTorch fake-quant network on the first 5 test images; then the table
# (benchmarks/peers_summary.py). Quality only: the speed column comes from benchmarks/speed_ratio.py on an idle
# machine (see benchmarks/RESULTS.md).
#   bash benchmarks/peers.sh [prenet_rain100h] [prenet_rain100l] [gcanet] [aodnet] [iat_lol_v1]   (default: all)
# PEERS_THREADS=1 runs ONNX Runtime and PyTorch on one thread (two invocations side by side on a 2-core machine).
# PTQ calibrations: minmax, percentile and entropy; PReNet and GCANet skip entropy, and the Rain100L PReNet (whose
# own test set is not among the shared sets) minmax too: each of their files takes ONNX Runtime 5-10 minutes on the
# full test set.
# writes benchmarks/out/peers/<model>_{fp32,ptq_<calibration>,qdr_int8,qdr_int8_tensorrt}.onnx,
# benchmarks/results/peers_<model>/bench.* (with side-by-side pictures), benchmarks/results/peers_parity_<model>.*
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ "${#models[@]}" -gt 0 ] || models=(prenet_rain100h prenet_rain100l gcanet aodnet iat_lol_v1)
out=benchmarks/out/peers
mkdir -p "$out"
weights=../shared/weights
threads=${PEERS_THREADS:-$(nproc)}
for model in "${models[@]}"; do
  case "$model" in
    prenet_rain100h) task=derain; published=$weights/PReNet/PReNet6_Rain100H.pth; calibs=(minmax percentile) ;;
    prenet_rain100l) task=derain; published=$weights/PReNet/PReNet6_Rain100L.pth; calibs=(percentile) ;;
    gcanet) task=dehaze; published=$weights/GCANet/gcanet_dehaze.pth; calibs=(minmax percentile) ;;
    aodnet) task=dehaze; published=$weights/AODNet/aodnet_dehazer.pth; calibs=(minmax percentile entropy) ;;
    iat_lol_v1) task=lowlight; published=$weights/IAT/IAT_lol_v1.pth; calibs=(minmax percentile entropy) ;;
    *) echo "unknown model '$model': choose from prenet_rain100h prenet_rain100l gcanet aodnet iat_lol_v1" >&2; exit 2 ;;
  esac
  opt=options/peers/$model.yml
  ckpt=experiments/peer_$model/models/net_g_latest.pth
  [ -f "$ckpt" ] || basicsr train -opt "$opt" --auto_resume
  basicsr export -opt "$opt" --ckpt "$published" --fp32 --out "$out/${model}_fp32.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "$ckpt" --target onnxruntime --out "$out/${model}_qdr_int8.onnx" --overwrite
  basicsr export -opt "$opt" --ckpt "$ckpt" --target tensorrt --out "$out/${model}_qdr_int8_tensorrt.onnx" \
    --overwrite || echo "$model: the tensorrt form does not pass the checker (see above)"
  files=(--model "fp32=$out/${model}_fp32.onnx")
  for calib in "${calibs[@]}"; do
    basicsr ptq -opt "$opt" --ckpt "$published" --calib "$calib" --out "$out/${model}_ptq_$calib.onnx" --overwrite
    files+=(--model "ptq_$calib=$out/${model}_ptq_$calib.onnx")
  done
  files+=(--model "qdr=$out/${model}_qdr_int8.onnx")
  basicsr bench -opt "$opt" "${files[@]}" --task "$task" --reference fp32 --no-speed --pictures 2 \
    --threads "$threads" --out "benchmarks/results/peers_$model" --overwrite
  python benchmarks/onnx_eval.py -opt "$opt" --ckpt "$ckpt" --max-images 5 --threads "$threads" \
    --name "peers_parity_$model"
done
python benchmarks/peers_summary.py
