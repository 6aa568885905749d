"""Checkpoint cost: size on disk and time to save and restore a task's full training state.

usage: python benchmarks/checkpoint.py [--env halfcheetah] [--repeats 3]
Writes benchmarks/results/checkpoint_<env>.json and prints a table. The replay buffer is full of
random data (as after 1M frames), so sizes are those of a late checkpoint.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from pderl_jax.config import load_config
from pderl_jax.envs import make_environment
from pderl_jax.training import Trainer
from pderl_jax.training.checkpoint import CheckpointOptions, Checkpointer


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.env)
    env = make_environment(args.env)
    trainer = Trainer(config, env)
    state = jax.jit(trainer.init)(jax.random.key(0))
    full = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape, x.dtype)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x, state.replay)
    state = state.replace(replay=full.replace(size=jnp.asarray(config.learner.replay_capacity, full.size.dtype)))
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    results = {"env": args.env, "machine": f"{platform.machine()} ({jax.devices()[0].device_kind})", "cases": []}
    for replay in (True, False):
        saves, restores = [], []
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                keeper = Checkpointer(Path(folder), CheckpointOptions(replay=replay))
                start = time.perf_counter()
                keeper.save(state.replace(generation=jnp.int32(repeat + 1)), {"wall_s": 0.0})
                saves.append(time.perf_counter() - start)
                size = folder_bytes(Path(folder) / "checkpoints")
                start = time.perf_counter()
                keeper.restore_latest(like, fresh_replay=state.replay, report=lambda _: None)
                restores.append(time.perf_counter() - start)
        results["cases"].append({"replay": replay, "size_mb": round(size / 1e6, 1), "save_s": round(min(saves), 3),
                                 "restore_s": round(min(restores), 3)})
    out = Path(__file__).parent / "results" / f"checkpoint_{args.env}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"| {args.env} checkpoint | size | save | restore |\n|---|---|---|---|")
    for case in results["cases"]:
        print(f"| {'with' if case['replay'] else 'without'} replay buffer | {case['size_mb']} MB | "
              f"{case['save_s']} s | {case['restore_s']} s |")


if __name__ == "__main__":
    main()
