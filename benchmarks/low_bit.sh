#!/usr/bin/env bash
# Low-bit QAT and the sibling methods side by side (docs/method.md, "Low-bit QAT"); every run of a setting has the
# same start, data, budget and seed, and is scored on its whole validation set by benchmarks/qat_ablation.py.
#   bash benchmarks/low_bit.sh [SETTING ...]      (default: all, in this order)
# Settings:
#   w8a8, w4a8, w4a4  the width-32 EFM on BSD68 sigma 25, from one FP32 start (the FP32 stage of
#                     options/qdr_denoise_bsd68.yml, 4000 iterations), 1000 iterations per method; W4A4 seeds 0, 1, 2
#   lowlight_w4a4     the colour EFM on the low-light task (CBSD432 -> CBSD68-lowlight) from the FP32 network of
#                     options/tasks/lowlight_full.yml, 500 iterations per method, seeds 0, 1, 2
#   hybridmix_w8a8    QATIE's HybridMixUNet on BSD68 sigma 25: FP32 (options/low_bit/hybridmix_bsd68_fp32.yml), then
#                     its own QAT scheme and QDR, 1000 iterations each
# Seed 0 of every setting runs first, then the seeds 1 and 2. Resumable run by run: a run with a score is skipped, a run
# with a final checkpoint is only scored, an interrupted run resumes from its last training state (--auto_resume). Two
# copies of this script may run side by side (one core each, OMP_NUM_THREADS=1): a run another copy holds is skipped.
# Writes experiments/low_bit_[<task>_]<setting>_<method>_s<seed>/ and benchmarks/results/low_bit/<run>.json;
# python benchmarks/low_bit_summary.py (run at the end) makes the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
settings=("$@")
[ "${#settings[@]}" -gt 0 ] || settings=(w8a8 w4a8 w4a4 lowlight_w4a4 hybridmix_w8a8)
bsd68_methods=(ptq:options/ablation/bsd68_ptq.yml qat:options/ablation/bsd68_qat.yml
               qat_okd:options/ablation/bsd68_qat_okd.yml qat_deckd:options/ablation/bsd68_qat_deckd.yml
               qdr_dfd:options/ablation/bsd68_qdr_fixed.yml qdr_lmr:options/ablation/bsd68_qdr_lmr.yml
               crqat:options/low_bit/bsd68_crqat.yml qatie:options/low_bit/bsd68_qatie.yml
               best:options/low_bit/bsd68_best.yml)
lowlight_methods=(qat:options/low_bit/lowlight_qat.yml qdr_lmr:options/low_bit/lowlight_qdr.yml
                  crqat:options/low_bit/lowlight_crqat.yml best:options/low_bit/lowlight_best.yml)
hybridmix_methods=(qatie:options/low_bit/hybridmix_bsd68_qatie.yml qdr_lmr:options/low_bit/hybridmix_bsd68_qdr.yml)
mkdir -p benchmarks/results/low_bit benchmarks/out/low_bit_locks

locked() {  # run "$2..." holding the lock file $1 (blocking): one copy trains a shared FP32 start, the other waits
  local lock=$1; shift
  ( flock 9; "$@" ) 9>"benchmarks/out/low_bit_locks/$lock"
}
teacher_of() {  # the FP32 start of a setting, trained first when missing
  case "$1" in
    w8a8|w4a8|w4a4)
      local t=experiments/low_bit_bsd68_fp32/models/net_g_latest.pth
      [ -f "$t" ] || locked bsd68_fp32 bash -c "[ -f $t ] || basicsr train -opt options/qdr_denoise_bsd68.yml \
        --auto_resume --force_yml name=low_bit_bsd68_fp32 train:total_iter=4000 >&2"
      echo "$t" ;;
    lowlight_w4a4)
      local t=experiments/task_lowlight/models/net_g_fp32.pth
      [ -f "$t" ] || locked lowlight_fp32 bash -c "[ -f $t ] || basicsr train -opt options/tasks/lowlight_full.yml \
        --auto_resume >&2"
      echo "$t" ;;
    hybridmix_w8a8)
      local t=experiments/low_bit_hybridmix_fp32/models/net_g_latest.pth
      [ -f "$t" ] || locked hybridmix_fp32 bash -c "[ -f $t ] || basicsr train \
        -opt options/low_bit/hybridmix_bsd68_fp32.yml --auto_resume >&2"
      echo "$t" ;;
  esac
}

runs=()
for seed in 0 1 2; do
  for setting in "${settings[@]}"; do
    case "$setting" in
      w8a8|w4a8) [ "$seed" -eq 0 ] || continue; methods=("${bsd68_methods[@]}") ;;
      w4a4) methods=("${bsd68_methods[@]}") ;;
      lowlight_w4a4) methods=("${lowlight_methods[@]}") ;;
      hybridmix_w8a8) [ "$seed" -eq 0 ] || continue; methods=("${hybridmix_methods[@]}") ;;
      *) echo "unknown setting '$setting': choose from w8a8, w4a8, w4a4, lowlight_w4a4, hybridmix_w8a8" >&2; exit 2 ;;
    esac
    for method in "${methods[@]}"; do runs+=("$setting:$method:$seed"); done
  done
done

run_one() {  # setting method options-file seed name
  local setting=$1 method=$2 opt=$3 seed=$4 name=$5 quant teacher
  case "$setting" in
    *w8a8) quant=(quant:bits=8) ;;
    *w4a8) quant=(quant:weight_bits=4 quant:act_bits=8) ;;
    *w4a4) quant=(quant:bits=4 quant:act_symmetric=false) ;;  # LSQ+: asymmetric activations, learned zero points
  esac
  teacher=$(teacher_of "$setting")
  if [ ! -f "experiments/$name/models/net_g_latest.pth" ]; then
    basicsr train -opt "$opt" --auto_resume --force_yml "name=$name" "manual_seed=$seed" \
      "path:pretrain_network_g=$teacher" "${quant[@]}" "val=~"  # scored below, once, on the whole set
  fi
  python benchmarks/qat_ablation.py --name "low_bit/$name" "$name"
}

done_runs=0
for run in "${runs[@]}"; do
  IFS=: read -r setting method opt seed <<< "$run"
  name=low_bit_${setting}_${method}_s$seed
  bar=$(printf '%*s' $((30 * done_runs / ${#runs[@]})) '' | tr ' ' '#')
  printf '[%-30s] %d/%d runs done; now %s\n' "$bar" "$done_runs" "${#runs[@]}" "$name" >&2
  if [ ! -f "benchmarks/results/low_bit/$name.json" ]; then
    exec 8>"benchmarks/out/low_bit_locks/$name"
    if flock -n 8; then
      run_one "$setting" "$method" "$opt" "$seed" "$name"
    else
      echo "$name: another copy of this script runs it; skipped" >&2
    fi
    exec 8>&-
  fi
  done_runs=$((done_runs + 1))
done
printf '[%-30s] %d/%d runs done\n' "$(printf '%*s' 30 '' | tr ' ' '#')" "$done_runs" "${#runs[@]}" >&2
python benchmarks/low_bit_summary.py
