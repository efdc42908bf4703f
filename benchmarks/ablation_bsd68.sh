#!/usr/bin/env bash
# The BSD68 (sigma 25) ablation table: six stage-B runs from one FP32 EFM, then one evaluation of all of them.
# Needs ../shared/datasets and experiments/qdr_denoise_bsd68/models/net_g_fp32.pth, which
#   basicsr train -opt options/qdr_denoise_bsd68.yml
# writes when its QAT stage starts. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f experiments/qdr_denoise_bsd68/models/net_g_fp32.pth ] || {
  echo "run 'basicsr train -opt options/qdr_denoise_bsd68.yml' first (it writes net_g_fp32.pth)" >&2; exit 1; }
variants=(ptq qat qat_okd qat_deckd qdr_fixed qdr_lmr)
for v in "${variants[@]}"; do
  basicsr train -opt "options/ablation/bsd68_${v}.yml"
done
python benchmarks/qat_ablation.py --name ablation_bsd68 "${variants[@]/#/ablation_bsd68_}"
