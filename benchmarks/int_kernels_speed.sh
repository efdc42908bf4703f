#!/usr/bin/env bash
# Speed of the integer-kernel exports, per arch of benchmarks/int_kernels.py: its FP32 file, the plugin's INT8 file
# without the integer-kernel quantization points (quant.integer_points: false), the INT8 file with them (the
# default) and ONNX Runtime's own PTQ of the FP32 file, timed against each other by benchmarks/speed_ratio.py
# (interleaved, 1 x C x 256 x 256, 2 threads, 3 repeats; 10 runs per file and repeat, 100 for the EFMs). Run it on
# an idle machine: a second busy process on the cores makes the ratios meaningless.
#   bash benchmarks/int_kernels_speed.sh [ARCH_FILE_STEM ...]    (default: every arch; e.g. EDSR_small_x4 DnCNN)
# Makes the files first when missing (benchmarks/out/int_kernels/{points,no_points}/), writes
# benchmarks/results/int_kernels_speed/<arch>.{json,md}; python benchmarks/int_kernels_speed_summary.py makes the table.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=benchmarks/out/int_kernels
if [ ! -d "$dir/points" ]; then
  OMP_NUM_THREADS=1 python benchmarks/int_kernels.py --out benchmarks/results/int_kernels_after --keep "$dir/points.tmp"
  mv "$dir/points.tmp" "$dir/points"
fi
if [ ! -d "$dir/no_points" ]; then
  OMP_NUM_THREADS=1 python benchmarks/int_kernels.py --no-integer-points --out benchmarks/results/int_kernels_no_points \
    --keep "$dir/no_points.tmp"
  for f in "$dir"/no_points.tmp/*_int8.onnx; do mv "$f" "${f%_int8.onnx}_int8_no_points.onnx"; done
  mv "$dir/no_points.tmp" "$dir/no_points"
fi
archs=("$@")
if [ "${#archs[@]}" -eq 0 ]; then
  for f in "$dir"/points/*_fp32.onnx; do archs+=("$(basename "$f" _fp32.onnx)"); done
fi
mkdir -p benchmarks/results/int_kernels_speed
for arch in "${archs[@]}"; do
  echo "== $arch"
  # The EFMs run in ~10-20 ms: 20 consecutive runs per pass (100 in 5 passes) time them warm, as a deployment runs
  # one network again and again; with 2 runs per pass the first run after another file's pass (cold caches) weighs
  # in and their INT8 files measured 1.2x instead of 1.8x. The others run 0.1-1 s, where 2 runs per pass suffice.
  case "$arch" in EFM_*) runs=100 ;; *) runs=10 ;; esac
  python benchmarks/speed_ratio.py "$dir/points/${arch}_fp32.onnx" "$dir/no_points/${arch}_int8_no_points.onnx" \
    "$dir/points/${arch}_int8.onnx" "$dir/points/${arch}_ptq.onnx" --size 256 --threads 2 --repeats 3 --runs $runs \
    --rounds 5 --pause 5 --name "int_kernels_speed/$arch"
done
