#!/bin/bash
# Whether two checkouts of pderl_jax write the same metrics.csv rows (wall time aside) for the same seeds:
# brax and native runs of pderl and td3 (one with --generations-per-call 3), a 2-run sweep and the toy task.
#   git worktree add /tmp/before REV && tools/same_csvs.sh /tmp/before . /tmp/same_csvs
set -u
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2"); OUT=$(realpath -m "${3:-/tmp/same_csvs}")
TINY="evolution.pop_size=4 evolution.genetic_memory_capacity=256 learner.replay_capacity=10000 network.actor_hidden=32,32 network.critic_input_width=16 network.critic_hidden_width=16"
HOPPER="--env hopper --episode-length 20 --seed 3 --no-progress"
runs() {  # TREE DEST
  local tree=$1 dest=$2 cli
  rm -rf "$dest"; mkdir -p "$dest"
  cli() { PYTHONPATH=$tree python -c 'import sys; from pderl_jax.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
  cli train $HOPPER --backend brax --physics spring --frames 600 --set $TINY --out "$dest/brax-pderl" >/dev/null
  cli train $HOPPER --backend brax --physics spring --frames 600 --generations-per-call 3 --set $TINY --out "$dest/brax-pderl-gpc3" >/dev/null
  cli train $HOPPER --mode td3 --backend brax --physics spring --frames 600 --set $TINY --out "$dest/brax-td3" >/dev/null
  cli train $HOPPER --backend native --frames 600 --set $TINY --out "$dest/native-pderl" >/dev/null
  cli train $HOPPER --mode td3 --backend native --frames 2500 --set $TINY --out "$dest/native-td3" >/dev/null
  cli sweep --env hopper --episode-length 20 --no-progress --backend brax --physics spring --seeds 0..1 --frames 600 --set $TINY --out "$dest/sweep2" >/dev/null
  (cd "$tree/tests" && PYTHONPATH=$tree python - "$dest" <<'PY'
import sys
from toy_envs import CounterEnv
from test_checkpoint import small_config
from pderl_jax.training.loop import train
from pderl_jax.training.loop import RunOptions  # loop re-exports it in every version
for mode in ("pderl", "td3"):
    train(small_config(5, mode=mode), CounterEnv(), f"{sys.argv[1]}/toy-{mode}", RunOptions(progress=False, max_generations=6),
          print_fn=lambda _: None)
PY
  )
}
runs "$BEFORE" "$OUT/before" && runs "$AFTER" "$OUT/after" || exit 1
python - "$OUT" <<'PY'
import csv, sys, pathlib
root = pathlib.Path(sys.argv[1])
def rows(p):
    with open(p) as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]
same = True
for f in sorted((root / "before").rglob("metrics.csv")):
    g = root / "after" / f.relative_to(root / "before")
    ok = g.exists() and rows(f) == rows(g)
    same &= ok
    print(("same " if ok else "DIFFERENT ") + str(f.relative_to(root / "before")))
print("every metrics.csv is the same" if same else "some metrics.csv differ")
sys.exit(0 if same else 1)
PY
