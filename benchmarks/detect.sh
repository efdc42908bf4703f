#!/usr/bin/env bash
# Downstream detection (docs/evaluation.md, "Downstream detection"): for each restorer, FastestDet on the clean
# images, the degraded inputs and the outputs of the FP32 file, the QDR INT8 file and the best ONNX Runtime PTQ of
# the same network (best calibration by PSNR in benchmarks/RESULTS.md), scored against pseudo-labels from the clean
# images. Uses the ONNX files benchmarks/tasks.sh and benchmarks/peers.sh write (the FP32 and QDR ones are
# committed; the PTQ ones are made again with basicsr ptq when missing). Quality only, no timing.
#   bash benchmarks/detect.sh [efm_derain efm_dehaze efm_lowlight efm_denoise prenet_rain100h prenet_rain100l
#                              gcanet aodnet iat_lol_v1]      (default: all)
#   DETECT_THREADS=1 runs ONNX Runtime on one thread (two runs side by side on two cores).
# writes benchmarks/results/detect_<restorer>/{detect,bench}.{json,csv,md} and detect_pictures/*.jpg;
# python benchmarks/detect_summary.py gathers them into benchmarks/results/detect_summary.*
set -euo pipefail
cd "$(dirname "$0")/.."
restorers=("$@")
[ "${#restorers[@]}" -gt 0 ] ||
  restorers=(efm_derain efm_dehaze efm_lowlight efm_denoise prenet_rain100h prenet_rain100l gcanet aodnet iat_lol_v1)
threads=${DETECT_THREADS:-2}
for restorer in "${restorers[@]}"; do
  case "$restorer" in
    efm_*)
      task=${restorer#efm_}
      opt=options/tasks/${task}_full.yml
      dir=benchmarks/out/tasks
      fp32=$dir/${task}_fp32.onnx qdr=$dir/${task}_qdr_int8.onnx ckpt=experiments/task_$task/models/net_g_fp32.pth
      ;;
    prenet_*|gcanet|aodnet|iat_lol_v1)
      opt=options/peers/$restorer.yml
      dir=benchmarks/out/peers
      fp32=$dir/${restorer}_fp32.onnx qdr=$dir/${restorer}_qdr_int8.onnx ckpt=
      ;;
    *) echo "unknown restorer '$restorer'" >&2; exit 2 ;;
  esac
  case "$restorer" in
    efm_derain|efm_denoise|prenet_rain100l|iat_lol_v1) calib=percentile ;;
    *) calib=minmax ;;
  esac
  case "$restorer" in
    efm_derain|prenet_*) sets=(--task derain) ;;
    efm_dehaze|gcanet|aodnet) sets=(--task dehaze) ;;
    efm_lowlight|iat_lol_v1) sets=(--task lowlight --datasets CBSD68-lowlight) ;;
    efm_denoise) sets=(--task denoise --datasets CBSD68 --sigmas 25) ;;
  esac
  ptq=${fp32%_fp32.onnx}_ptq_$calib.onnx
  if [ ! -f "$ptq" ]; then
    if [ -z "$ckpt" ]; then
      ckpt=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['path']['pretrain_network_g'])" "$opt")
    fi
    basicsr ptq -opt "$opt" --ckpt "$ckpt" --calib "$calib" --out "$ptq"
  fi
  out=benchmarks/results/detect_$restorer
  basicsr bench -opt "$opt" --model "fp32=$fp32" --model "qdr_int8=$qdr" --model "ptq_$calib=$ptq" "${sets[@]}" \
    --reference fp32 --no-speed --threads "$threads" --detect --pictures 3 --out "$out" --overwrite
  rm -rf "$out/pictures"  # the PSNR side-by-sides of these files are in the tasks_* / peers_* results
done
