#!/usr/bin/env bash
# A comparison with one process per (task, method), all at once, then one merged table per task.
# On a machine with many cores (or a GPU) this overlaps the compilations; the wall-clock of each
# method is then measured while the others run.
#
# (PYTHON chooses the interpreter.)
# usage: benchmarks/compare_parallel.sh OUT FRAMES SEEDS TASKS METHODS [LIMIT_S] [-- extra compare args]
#   e.g. benchmarks/compare_parallel.sh results/cmp 100000 5 halfcheetah,hopper pderl,perl,derl,erl,td3,ppo
set -u
out=$1 frames=$2 seeds=$3 tasks=$4 methods=$5 limit=${6:-0}
shift $(( $# < 6 ? $# : 6 ))
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share one accelerator
for task in ${tasks//,/ }; do
  for method in ${methods//,/ }; do
    timeout "${limit}" "${PYTHON:-python}" -m pderl_jax.cli compare --env "$task" --methods "$method" --seeds "$seeds" \
      --frames "$frames" --out "$out/$task/$method" --no-progress "$@" > "$out/$task-$method.log" 2>&1 &
  done
done
wait
for task in ${tasks//,/ }; do
  done_runs=$(for d in "$out/$task"/*/; do [ -f "$d/summary.json" ] && echo "$d"; done)
  # shellcheck disable=SC2086
  "${PYTHON:-python}" -m pderl_jax.cli compare --merge $done_runs --out "$out/$task-table" > "$out/$task-table.log" 2>&1
  cat "$out/$task-table/table.md" 2>/dev/null || echo "$task: no finished method"
done
