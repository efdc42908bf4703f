#!/usr/bin/env bash
# A faster EFM layout trained on BSD68 sigma 25 beside the default one: the width-32 EFM without its LDG gates and
# with pixel-shuffle up-sampling (network_g: ldg: false, up: shuffle), FP32 quality and its W8A8 QDR file's quality
# and speed against the default layout's.
#   bash benchmarks/efm_layout.sh
# Steps (each skipped when its result exists, so the script resumes):
#   1. FP32: the FP32 stage (4000 iterations) of options/qdr_denoise_bsd68_fast.yml, the new layout
#      (experiments/efm_layout_noldg_shuffle_fp32/); the default layout's is experiments/low_bit_bsd68_fp32/
#      (benchmarks/low_bit.sh trains it when missing).
#   2. W8A8 QDR with the integer-kernel points: options/ablation/bsd68_qdr_lmr.yml (1000 iterations) from each FP32
#      network (experiments/efm_layout_{default,noldg_shuffle}_w8a8/), scored on the whole BSD68 by
#      benchmarks/qat_ablation.py (benchmarks/results/efm_layout/<run>.json).
#   3. The FP32 and INT8 ONNX files (benchmarks/out/efm_layout/) and their speed, interleaved, 256 x 256, 2 threads
#      (benchmarks/results/efm_layout/speed.json). Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/out/efm_layout
mkdir -p "$out" benchmarks/results/efm_layout
with_layout() {  # the options file $1 with the new layout, written to $2 (what training and basicsr export read)
  python -c "import sys, yaml; o = yaml.safe_load(open(sys.argv[1])); o['network_g'].update(ldg=False, up='shuffle')
yaml.safe_dump(o, open(sys.argv[2], 'w'), sort_keys=False)" "$1" "$2"
}
with_layout options/ablation/bsd68_qdr_lmr.yml "$out/bsd68_qdr_lmr_noldg_shuffle.yml"

default_fp32=experiments/low_bit_bsd68_fp32/models/net_g_latest.pth
[ -f "$default_fp32" ] || basicsr train -opt options/qdr_denoise_bsd68.yml --auto_resume \
  --force_yml name=low_bit_bsd68_fp32 train:total_iter=4000
layout_fp32=experiments/efm_layout_noldg_shuffle_fp32/models/net_g_latest.pth
[ -f "$layout_fp32" ] || basicsr train -opt options/qdr_denoise_bsd68_fast.yml --auto_resume \
  --force_yml name=efm_layout_noldg_shuffle_fp32 train:total_iter=4000

for run in default noldg_shuffle; do
  name=efm_layout_${run}_w8a8
  if [ "$run" = default ]; then
    fp32=$default_fp32; opt=options/ablation/bsd68_qdr_lmr.yml
  else
    fp32=$layout_fp32; opt=$out/bsd68_qdr_lmr_noldg_shuffle.yml
  fi
  [ -f "experiments/$name/models/net_g_latest.pth" ] || basicsr train -opt "$opt" --auto_resume \
    --force_yml "name=$name" "path:pretrain_network_g=$fp32" "val=~"
  [ -f "benchmarks/results/efm_layout/$name.json" ] || \
    python benchmarks/qat_ablation.py --name "efm_layout/$name" "$name"
  [ -f "$out/${run}_fp32.onnx" ] || basicsr export -opt "$opt" --ckpt "$fp32" --fp32 --out "$out/${run}_fp32.onnx"
  [ -f "$out/${run}_int8.onnx" ] || basicsr export -opt "$opt" --ckpt "experiments/$name/models/net_g_latest.pth" \
    --target onnxruntime --out "$out/${run}_int8.onnx"
done
python benchmarks/speed_ratio.py "$out/default_fp32.onnx" "$out/default_int8.onnx" "$out/noldg_shuffle_fp32.onnx" \
  "$out/noldg_shuffle_int8.onnx" --size 256 --threads 2 --repeats 5 --runs 100 --rounds 5 --pause 5 \
  --name efm_layout/speed  # 20 consecutive runs per pass: warm, as a deployment runs one network
