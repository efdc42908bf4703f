#!/usr/bin/env bash
# Low-bit QAT and the sibling methods side by side on the width-32 EFM, BSD68 sigma 25 (docs/method.md, "Low-bit
# QAT"): one FP32 start (the FP32 stage of options/qdr_denoise_bsd68.yml), then per setting (W8A8, W4A8, W4A4) every
# method with the same data, budget (1000 iterations) and seed; W4A4 with seeds 0, 1, 2. Each run is scored on all of
# BSD68 (fake-quant INT8 and its FP32 teacher) by benchmarks/qat_ablation.py.
#   bash benchmarks/low_bit.sh [w8a8] [w4a8] [w4a4]      (default: all three; seed 0 of each in this order first)
# Resumable run by run: a run with a score is skipped, a run with a final checkpoint is only scored, an interrupted run
# resumes from its last training state (--auto_resume). Writes experiments/low_bit_<setting>_<method>_s<seed>/ and
# benchmarks/results/low_bit/<run>.json; python benchmarks/low_bit_summary.py makes the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
settings=("$@")
[ "${#settings[@]}" -gt 0 ] || settings=(w8a8 w4a8 w4a4)
methods=(ptq:options/ablation/bsd68_ptq.yml qat:options/ablation/bsd68_qat.yml
         qat_okd:options/ablation/bsd68_qat_okd.yml qat_deckd:options/ablation/bsd68_qat_deckd.yml
         qdr_dfd:options/ablation/bsd68_qdr_fixed.yml qdr_lmr:options/ablation/bsd68_qdr_lmr.yml
         crqat:options/low_bit/bsd68_crqat.yml qatie:options/low_bit/bsd68_qatie.yml)
teacher=experiments/low_bit_bsd68_fp32/models/net_g_latest.pth
if [ ! -f "$teacher" ]; then  # the FP32 stage alone: 4000 iterations, as qdr_denoise_bsd68 before its QAT
  basicsr train -opt options/qdr_denoise_bsd68.yml --auto_resume \
    --force_yml name=low_bit_bsd68_fp32 train:total_iter=4000
fi
runs=()  # seed 0 of every setting first (in the order given), then W4A4's seeds 1 and 2
for seed in 0 1 2; do
  for setting in "${settings[@]}"; do
    case "$setting" in
      w8a8|w4a8) [ "$seed" -eq 0 ] || continue ;;
      w4a4) ;;
      *) echo "unknown setting '$setting': choose from w8a8, w4a8, w4a4" >&2; exit 2 ;;
    esac
    for method in "${methods[@]}"; do runs+=("$setting:$method:$seed"); done
  done
done
mkdir -p benchmarks/results/low_bit
done_runs=0
for run in "${runs[@]}"; do
  IFS=: read -r setting method opt seed <<< "$run"
  name=low_bit_${setting}_${method}_s$seed
  bar=$(printf '%*s' $((30 * done_runs / ${#runs[@]})) '' | tr ' ' '#')
  printf '[%-30s] %d/%d runs done; now %s\n' "$bar" "$done_runs" "${#runs[@]}" "$name" >&2
  case "$setting" in
    w8a8) quant=(quant:bits=8) ;;
    w4a8) quant=(quant:weight_bits=4 quant:act_bits=8) ;;
    w4a4) quant=(quant:bits=4 quant:act_symmetric=false) ;;  # LSQ+: asymmetric activations, learned zero points
  esac
  if [ ! -f "benchmarks/results/low_bit/$name.json" ]; then
    if [ ! -f "experiments/$name/models/net_g_latest.pth" ]; then
      basicsr train -opt "$opt" --auto_resume --force_yml "name=$name" "manual_seed=$seed" \
        "path:pretrain_network_g=$teacher" "${quant[@]}"
    fi
    python benchmarks/qat_ablation.py --name "low_bit/$name" "$name"
  fi
  done_runs=$((done_runs + 1))
done
printf '[%-30s] %d/%d runs done\n' "$(printf '%*s' 30 '' | tr ' ' '#')" "$done_runs" "${#runs[@]}" >&2
python benchmarks/low_bit_summary.py
