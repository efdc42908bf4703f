#!/usr/bin/env bash
# Restormer -> SSM hybrid -> INT8, per task (docs/hybrid.md): the Restormer teacher (FP32 stage, then QDR), the
# surrogate distillation, the search (scored on the options' val set, never the test set), then the hybrids the search
# chose to fine-tune (hybrid.search.finetune) fine-tuned end to end and quantized with QDR, beside the teacher under the
# same fine-tuning.
#   bash benchmarks/hybrid.sh [gray_sigma25] [derain]      (default: both)
# Resumable step by step: a step whose output exists is skipped, a training resumes from its last state
# (--auto_resume). Long: on 2 CPU cores the teacher alone takes hours. The search runs without --latency (timing needs
# an idle machine): time the searched hybrids afterwards with
#   python benchmarks/hybrid_latency.py --search experiments/hybrid_<task>/search.json --sizes 256 512
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ "${#tasks[@]}" -gt 0 ] || tasks=(gray_sigma25 derain)
for task in "${tasks[@]}"; do
  case "$task" in gray_sigma25|derain) ;; *) echo "unknown task '$task': choose gray_sigma25 or derain" >&2; exit 2 ;; esac
  teacher=experiments/restormer_$task/models
  [ -f "$teacher/net_g_latest.pth" ] || basicsr train -opt "options/hybrid/restormer_$task.yml" --auto_resume
  opt=options/hybrid/hybrid_$task.yml
  out=experiments/hybrid_$task
  [ -f "$out/surrogates.pth" ] || basicsr hybrid distill -opt "$opt"
  [ -f "$out/search.json" ] || basicsr hybrid search -opt "$opt"
  for tuned in "$out"/hybrid_*.yml; do
    name=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$tuned")
    [ -f "experiments/$name/models/net_g_latest.pth" ] || basicsr train -opt "$tuned" --auto_resume
  done
  # the teacher under the hybrids' fine-tuning schedule (its own name: experiments/hybrid_<task> holds the search)
  [ -f "experiments/hybrid_${task}_teacher/models/net_g_latest.pth" ] ||
    basicsr train -opt "$opt" --auto_resume --force_yml "name=hybrid_${task}_teacher"
done
