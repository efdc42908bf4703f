# Sourced by benchmarks/tasks.sh and benchmarks/tasks_integer_points.sh: the restoration tasks and the basicsr bench
# test-set flags of each. task_sets TASK sets the array `sets` (exits 2 on an unknown task).
TASKS=(derain dehaze lowlight denoise)
task_sets() {
  case "$1" in
    derain|dehaze|lowlight) sets=(--task "$1") ;;
    denoise) sets=(--task denoise --datasets CBSD68 --sigmas 25) ;;
    *) echo "unknown task '$1': choose from ${TASKS[*]}" >&2; exit 2 ;;
  esac
}
