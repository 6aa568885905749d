"""From the official PDERL DDPG settings to TD3 as its authors ran it, one group of settings at a time.

usage: python benchmarks/td3_ablation.py [--runs ~/runs/td3-ablation] [--frames 100000] [--seed 0]
                                         [--out benchmarks/results/td3_ablation] [--report-only]

`--mode td3` on native HalfCheetah-v5 with preset `official` (TD3's update on the PDERL code's
DDPG settings), then cumulatively: the update rates (learning rates, tau, batch size), the warm-up
and exploration (random warm-up, Gaussian noise, learning from the first episode), the
architecture (400-300 ReLU, concatenated twin critics, no LayerNorm, default init), and timeouts
and clipping (bootstrapped time limits, no gradient clipping). The last step is the td3-2018
preset itself (checked). Each step is `pderl-jax train` into RUNS/<step>; a stopped step resumes
from its checkpoints and finished steps are kept, so the script can be run again until done.
Writes OUT/ablation.json and OUT/ablation.md (the champion test at every 20,000 frames and its
mean over the last 5 rows) and copies each step's metrics.csv and config.json to OUT/<step>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from pderl_jax.cli import main as cli
from pderl_jax.config import load_config, to_dict
from pderl_jax.presets import get_preset
from pderl_jax.training.metrics import METRICS_FILE, read_metric_columns

HERE = Path(__file__).parent
TASK = "halfcheetah"
GROUPS = [
    ("update rates", ["learner.actor_lr", "learner.critic_lr", "learner.tau", "learner.batch_size"]),
    ("warm-up and exploration", ["learner.warmup_frames", "learner.learning_starts", "learner.exploration",
                                 "learner.gaussian_noise_std"]),
    ("architecture", ["network.actor_hidden", "network.actor_activation", "network.critic_layout",
                      "network.critic_hidden", "network.critic_activation", "network.use_layer_norm",
                      "network.rl_actor_output_scale", "network.critic_output_scale"]),
    ("timeouts and clipping", ["learner.bootstrap_on_timeout", "learner.grad_clip_norm"]),
]


def steps() -> list[tuple[str, dict]]:
    """(name, --set values) of each step: the official settings, then each group of td3-2018's added."""
    target = get_preset("td3-2018").settings(TASK)
    official = load_config(TASK, {"mode": "td3", "preset": "official"})
    changed = {name for name, value in target.items() if name != "learner.algorithm"
               and _value(official, name) != value}
    grouped = {name for _, names in GROUPS for name in names}
    missing = changed - grouped
    if missing:
        raise SystemExit(f"td3-2018 changes {sorted(missing)}, which no group of the ablation holds")
    result, values = [("0 official", {})], {}
    for i, (group, names) in enumerate(GROUPS, start=1):
        values = {**values, **{name: target[name] for name in names}}
        result.append((f"{i} + {group}", dict(values)))
    final = load_config(TASK, {"mode": "td3", "preset": "official", **result[-1][1]})
    reference = load_config(TASK, {"mode": "td3"})
    if to_dict(final) | {"preset": "-"} != to_dict(reference) | {"preset": "-"}:
        raise SystemExit("the last step of the ablation is not the td3-2018 preset")
    return result


def _value(config, dotted):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def _as_flag(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def run_step(folder: Path, values: dict, frames: int, seed: int) -> None:
    summary = folder / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("frames", 0) >= frames:
        return
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir()):
        argv = ["train", "--resume", str(folder), "--frames", str(frames)]
    else:
        argv = ["train", "--env", "HalfCheetah-v5", "--backend", "native", "--mode", "td3", "--preset", "official",
                "--seed", str(seed), "--frames", str(frames), "--out", str(folder), "--force"]
        if values:
            argv += ["--set", *(f"{name}={_as_flag(value)}" for name, value in values.items())]
    if cli(argv + ["--no-progress"]) not in (0,):
        raise SystemExit(f"step {folder.name} stopped; run the script again to continue it")


def read_curve(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    columns = read_metric_columns(folder / METRICS_FILE)
    return columns["frames"], columns["champion_test"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path.home() / "runs" / "td3-ablation")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "td3_ablation")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the steps already in RUNS (as far as each got)")
    args = parser.parse_args(argv)
    points = list(range(20_000, args.frames + 1, 20_000))
    report = {"task": "HalfCheetah-v5", "backend": "native", "mode": "td3", "seed": args.seed, "frames": args.frames,
              "steps": []}
    for name, values in steps():
        folder = args.runs / name.split()[0]
        if args.report_only:
            if not (folder / "metrics.csv").exists():
                continue
        else:
            run_step(folder, values, args.frames, args.seed)
        frames, returns = read_curve(folder)
        at = {p: float(returns[frames <= p][-1]) for p in points if (frames <= p).any()}
        report["steps"].append({"step": name, "settings": {k: _as_flag(v) for k, v in values.items()},
                                "champion_test_at": at, "last_5_rows_mean": float(returns[-5:].mean())})
        target = args.out / name.split()[0]
        target.mkdir(parents=True, exist_ok=True)
        for file in ("metrics.csv", "config.json"):
            shutil.copy(folder / file, target / file)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2))
    lines = ["| step | " + " | ".join(f"{p // 1000}k" for p in points) + " | mean of last 5 rows |",
             "|---|" + "---|" * (len(points) + 1)]
    for step in report["steps"]:
        cells = [f"{step['champion_test_at'].get(p, float('nan')):.0f}" for p in points]
        lines.append(f"| {step['step']} | " + " | ".join(cells) + f" | {step['last_5_rows_mean']:.0f} |")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
