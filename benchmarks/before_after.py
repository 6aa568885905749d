"""Cold compile and frames/s of whole generations, this tree against a baseline revision, side by side.

Each case is TASK:BACKEND:MODE at the paper's settings (configs/, population 10), for example
`halfcheetah:brax:pderl` or `hopper:mjx:td3`. Every case runs in a fresh process for this tree
and for the baseline (a temporary `git worktree` of `--baseline`), one after the other, so
that the machine's drift hits both alike: the ratios are the figures to quote. Compilation
uses no persistent cache (a user's first run). After one warm-up generation, `--generations`
generations are timed (ten times as many in the learner-only modes, whose generations are
one episode).

    python benchmarks/before_after.py --baseline 792ff30 \\
        --cases halfcheetah:brax:pderl,hopper:brax:pderl,hopper:mjx:pderl,hopper:brax:td3,hopper:mjx:td3

Without `--baseline` only this tree is measured (the compile budget of every backend).
Writes benchmarks/results/before_after.json (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LEARNER_ONLY = ("ddpg", "td3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="halfcheetah:brax:pderl,halfcheetah:mjx:pderl,halfcheetah:native:pderl")
    parser.add_argument("--baseline", default=None, help="git revision to compare with (e.g. a commit or tag)")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "before_after.json")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one case, in this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.generations)))
        return

    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": ROOT}
        if args.baseline:
            trees["baseline"] = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees["baseline"]),
                            args.baseline], check=True)
        try:
            results = [{"case": case, **{name: run_case(tree, case, args.generations) for name, tree in trees.items()}}
                       for case in cases]
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["baseline"])])
    for row in results:
        if "baseline" in row:
            row["speedup"] = row["this"]["frames_per_s"] / row["baseline"]["frames_per_s"]
            row["compile_ratio"] = row["this"]["compile_s"] / row["baseline"]["compile_s"]
    report = {"baseline": args.baseline, "this": _revision(ROOT), "generations": args.generations,
              "device": results[0]["this"]["device"], "cpu_count": os.cpu_count(), "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"written: {args.out}")


def run_case(tree: Path, case: str, generations: int) -> dict:
    """One case measured by a fresh process importing the package from `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, __file__, "--measure", case, "--generations", str(generations)],
                          env=env, check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{case:<28} {tree.name:<10} compile {figures['compile_s']:6.1f} s | {figures['frames_per_s']:7.1f} "
          f"frames/s | {figures['seconds_per_generation']:6.2f} s/generation", flush=True)
    return figures


def measure(case: str, generations: int) -> dict:
    import jax

    import pderl_jax
    from pderl_jax.config import load_config
    from pderl_jax.envs import make_environment
    from pderl_jax.training import Trainer
    from timing import time_generations

    task, backend, mode = case.split(":")
    overrides = {"mode": mode, **({"learner.algorithm": mode} if mode in LEARNER_ONLY else {})}
    trainer = Trainer(load_config(task, overrides), make_environment(task, backend))
    figures, _, _ = time_generations(trainer, generations * (10 if mode in LEARNER_ONLY else 1))
    device = jax.devices()[0]
    return {**figures, "package": str(Path(pderl_jax.__file__).parent.parent), "environment": trainer.env.description,
            "device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__}


def print_table(report: dict) -> None:
    compared = report["baseline"] is not None
    print(f"\n{report['device']} ({report['cpu_count']} CPUs); this tree {report['this']}"
          + (f" against {report['baseline']}" if compared else ""))
    header = "| case | compile s | frames/s | s/generation |"
    print(header if not compared else
          "| case | compile s (before → after) | frames/s (before → after) | speed-up | compile ratio |")
    print("|---|---|---|---|" + ("---|" if compared else ""))
    for row in report["cases"]:
        this = row["this"]
        if not compared:
            print(f"| {row['case']} | {this['compile_s']:.1f} | {this['frames_per_s']:.1f} | "
                  f"{this['seconds_per_generation']:.2f} |")
            continue
        base = row["baseline"]
        print(f"| {row['case']} | {base['compile_s']:.1f} → {this['compile_s']:.1f} | "
              f"{base['frames_per_s']:.1f} → {this['frames_per_s']:.1f} | {row['speedup']:.2f}x | "
              f"{row['compile_ratio']:.2f} |")


def _revision(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
