"""Do the CleanRL settings brax cannot take as arguments change PPO's curve? The `cleanrl` preset beside the
same seeds with one of them put in.

usage: python benchmarks/ppo_variants.py --variant optimiser|critic-gain [--task hopper] [--seeds 0,2]
                                         [--frames 1000000] [--stop 300000]
       python benchmarks/ppo_variants.py --variant V --logs A.log B.log   (tables from earlier runs' printed lines)

Variants (vwxyzjn/cleanrl@fe8d8a0, ppo_continuous_action.py):
- optimiser: brax builds `optax.adam(learning_rate)` with eps 1e-8 and a constant rate; CleanRL uses eps
  1e-5 and anneals the rate linearly per iteration, (1 - (it - 1) / iterations) * 3e-4 (L183, L202-205).
- critic-gain: brax gives a network one kernel initialiser for every layer, so the preset's critic ends
  in an orthogonal layer of gain sqrt(2); CleanRL's ends with gain 1 (L115-121).
With the same seed and frame budget the random streams are those of the committed `cleanrl` runs
(benchmarks/results/learning_curves/<Task>-ppo), so each seed is compared with itself, row by row, until
the last evaluation at or before `--stop` frames. Writes results/ppo_variants/<task>-<variant>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).parent
COMMITTED = HERE / "results" / "learning_curves"
OUT = HERE / "results" / "ppo_variants"
TASK_FOLDERS = {"hopper": "Hopper-v5-ppo", "halfcheetah": "HalfCheetah-v5-ppo"}
ROW = re.compile(r"ppo seed (\d+): (\d+) frames, test (\S+), training episodes (\S+)")


class StopTraining(Exception):
    pass


def cleanrl_optimiser(frames: int, rate: float = 3e-4, updates_per_iteration: int = 10 * 32, rollout: int = 2048):
    """A block in which brax's PPO trainer gets CleanRL's Adam (eps 1e-5, rate annealed per 2,048-step
    iteration); brax looks `optax.adam` up when it builds its optimiser."""
    import optax

    original, iterations = optax.adam, frames // rollout

    def adam(learning_rate, **kwargs):
        if learning_rate != rate:
            raise ValueError(f"expected the cleanrl preset's learning rate {rate}, got {learning_rate}")
        return original(lambda count: rate * (1.0 - (count // updates_per_iteration) / iterations), eps=1e-5)

    return mock.patch.object(optax, "adam", adam)


def cleanrl_critic_gain(frames: int, gain: float = 1.0):
    """A block in which brax's PPO networks get a critic whose last layer (one output) is orthogonal with
    `gain`, its hidden layers as the preset sets them."""
    import jax
    from brax.training.agents.ppo import networks as ppo_networks

    original = ppo_networks.make_ppo_networks

    def make_ppo_networks(*args, value_network_kernel_init_fn, value_network_kernel_init_kwargs, **kwargs):
        hidden = value_network_kernel_init_fn(**value_network_kernel_init_kwargs)
        last = jax.nn.initializers.orthogonal(scale=gain)

        def critic_init(key, shape, dtype=jax.numpy.float32):
            return (last if shape[-1] == 1 else hidden)(key, shape, dtype)

        return original(*args, value_network_kernel_init_fn=lambda: critic_init,
                        value_network_kernel_init_kwargs={}, **kwargs)

    return mock.patch.object(ppo_networks, "make_ppo_networks", make_ppo_networks)


VARIANTS = {"optimiser": cleanrl_optimiser, "critic-gain": cleanrl_critic_gain}
SOURCES = {"optimiser": "vwxyzjn/cleanrl@fe8d8a0 ppo_continuous_action.py L183, L202-205",
           "critic-gain": "vwxyzjn/cleanrl@fe8d8a0 ppo_continuous_action.py L115-121"}


def run_variant(variant: str, task: str, seed: int, frames: int, stop: int) -> list[tuple[int, float, float]]:
    """(frames, champion test, training return) of each evaluation up to the last at or before `stop`."""
    from pderl_jax.envs import make_environment
    from pderl_jax.experiments.ppo import train_ppo

    rows = []

    def watch(line: str) -> None:
        print(line, flush=True)
        rows.extend(parse([line]).get(seed, []))
        if len(rows) > 1 and 2 * rows[-1][0] - rows[-2][0] > stop:  # the next evaluation would pass `stop`
            raise StopTraining

    with VARIANTS[variant](frames), tempfile.TemporaryDirectory() as scratch:
        try:
            train_ppo(make_environment(task, backend="mjx"), seed, frames, Path(scratch), preset="cleanrl",
                      print_fn=watch)
        except StopTraining:
            pass
    return rows


def parse(lines) -> dict[int, list[tuple[int, float, float]]]:
    found: dict[int, list] = {}
    for line in lines:
        if match := ROW.search(line):
            seed, frames, test, training = match.groups()
            found.setdefault(int(seed), []).append((int(frames), float(test), float(training)))
    return found


def committed_rows(task: str, seed: int) -> dict[int, tuple[float, float]]:
    from pderl_jax.training.metrics import METRICS_FILE, read_metrics

    folder = COMMITTED / TASK_FOLDERS[task] / "ppo"
    for run in sorted(folder.glob("run_*")):
        if json.loads((run / "config.json").read_text())["seed"] == seed:
            return {r["frames"]: (r["champion_test"], r["training_return"]) for r in read_metrics(run / METRICS_FILE)}
    raise SystemExit(f"no committed {task} PPO run of seed {seed} under {folder}")


def report(variant: str, task: str, variants: dict[int, list]) -> None:
    """Each seed's rows beside the committed run's at the same frames; the mean of the last rows."""
    table = [f"| seed | frames | training return, cleanrl | with {variant} | test, cleanrl | with it |",
             "|---|---|---|---|---|---|"]
    record = {"task": task, "variant": variant, "source": SOURCES[variant],
              "seeds": {}}
    for seed, rows in sorted(variants.items()):
        base = committed_rows(task, seed)
        # the untrained policy's test repeats the committed one's when the random streams are the same
        same_streams = rows[0][0] == 0 and abs(rows[0][1] - base[0][0]) < 0.1
        compared = [{"frames": f, "test": t, "training_return": r, "cleanrl_test": base[f][0],
                     "cleanrl_training_return": base[f][1]} for f, t, r in rows if f in base and f > 0]
        record["seeds"][seed] = {"same_streams": same_streams, "rows": compared}
        table += [f"| {seed} | {c['frames']:,} | {c['cleanrl_training_return']:.0f} | {c['training_return']:.0f} | "
                  f"{c['cleanrl_test']:.0f} | {c['test']:.0f} |" for c in compared]
    last = [entry["rows"][-1] for entry in record["seeds"].values()]
    record["last_mean"] = {"cleanrl": float(np.mean([e["cleanrl_training_return"] for e in last])),
                           variant: float(np.mean([e["training_return"] for e in last]))}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{task}-{variant}.json").write_text(json.dumps(record, indent=2))
    (OUT / f"{task}-{variant}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table), "\n", record["last_mean"], "same streams:",
          {seed: entry["same_streams"] for seed, entry in record["seeds"].items()})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--task", default="hopper", choices=sorted(TASK_FOLDERS))
    parser.add_argument("--seeds", default="0,2", help="comma-separated seeds with committed cleanrl runs")
    parser.add_argument("--frames", type=int, default=1_000_000, help="the committed runs' budget (sets the streams)")
    parser.add_argument("--stop", type=int, default=300_000, help="stop after the last evaluation at or before this")
    parser.add_argument("--logs", nargs="+", type=Path, help="read earlier runs' printed lines instead of running")
    args = parser.parse_args(argv)
    if args.logs:
        variants: dict[int, list] = {}
        for log in args.logs:
            variants.update(parse(log.read_text().splitlines()))
    else:
        variants = {int(s): run_variant(args.variant, args.task, int(s), args.frames, args.stop)
                    for s in args.seeds.split(",")}
    report(args.variant, args.task, variants)


if __name__ == "__main__":
    main()
