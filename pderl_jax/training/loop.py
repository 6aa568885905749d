"""The host loop: jitted chunks of generations, one CSV row per generation, progress and summary."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax import lax
from tqdm import tqdm

from pderl_jax.config import Config, to_dict
from pderl_jax.envs.rollout import Environment
from pderl_jax.hostmem import current_rss_mib, peak_rss_mib, release_freed_memory
from pderl_jax.memory import format_memory_estimate, memory_estimate
from pderl_jax.sharding import shard_population
from pderl_jax.training.generation import GenerationMetrics, Trainer
from pderl_jax.training.snapshot import save_snapshot

CSV_COLUMNS = ["generation", "frames", "wall_s", "best_fitness", "pop_mean", "pop_min", "pop_max",
               "champion_test", "rl_test", "critic_loss", "actor_loss", "elite_rate", "selected_rate",
               "discarded_rate", "synced"]


def metric_rows(metrics: GenerationMetrics, first_generation: int, wall_s: float) -> list[dict]:
    """CSV rows of a chunk of generations (metrics stacked on a leading axis)."""
    m = jax.tree.map(np.asarray, metrics)
    rows = []
    for i in range(m.frames.shape[0]):
        fitness = m.fitness[i] if m.fitness.shape[1] else np.full((1,), np.nan)  # learner-only modes
        rows.append({
            "generation": first_generation + i, "frames": int(m.frames[i]), "wall_s": round(wall_s, 3),
            "best_fitness": float(fitness.max()), "pop_mean": float(fitness.mean()),
            "pop_min": float(fitness.min()), "pop_max": float(fitness.max()),
            "champion_test": float(m.champion_test[i]), "rl_test": float(m.rl_test[i]),
            "critic_loss": float(m.critic_loss[i]), "actor_loss": float(m.actor_loss[i]),
            "elite_rate": float(m.elite_rate[i]), "selected_rate": float(m.selected_rate[i]),
            "discarded_rate": float(m.discarded_rate[i]), "synced": int(m.synced[i]),
        })
    return rows


def environment_record(env: Environment) -> dict:
    """What `config.json` records of the environment (enough to rebuild it)."""
    return {"name": getattr(env, "task", type(env).__name__), "backend": getattr(env, "backend", None),
            "episode_length": env.episode_length}


def environment_from_record(record: dict, task: str) -> Environment:
    """The environment a `config.json` environment record describes (inverse of `environment_record`)."""
    from pderl_jax.envs import make_environment

    if record["backend"] == "gymnasium":
        return make_environment(task, "gymnasium", episode_length=record["episode_length"])
    return make_environment(task, "brax", physics=record["backend"], episode_length=record["episode_length"])


def train(config: Config, env: Environment, out_dir: Path, generations_per_call: int = 1,
          progress: bool = True, print_fn: Callable[[str], None] = print, analyze_every: int = 0,
          analyze_draws: int = 10) -> dict:
    """Train until `config.frames` stored frames; writes `config.json` and `metrics.csv` in `out_dir`.

    Like the official loop, the budget is checked between generations, so a run overshoots it
    by at most one chunk of generations. At the end the population is saved (`population.msgpack`,
    for `pderl-jax analyze`). With `analyze_every` N > 0, the operator study runs every N
    generations into `out_dir/analysis/gen_<n>`; it uses its own random stream and counts no
    frames, so the training itself is unchanged. Returns a summary dict (also printed).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({**to_dict(config), "environment": environment_record(env)},
                                                    indent=2))
    print_fn(format_memory_estimate(memory_estimate(config, env.obs_dim, env.action_dim)))

    trainer = Trainer(config, env)

    def chunk(state):
        return lax.scan(lambda s, _: trainer.generation(s), state, None, length=generations_per_call)

    start = time.perf_counter()
    state = jax.jit(trainer.init)(jax.random.key(config.seed))  # one program, not hundreds of eager ops
    if len(jax.devices()) > 1 and not getattr(env, "batched", False):  # host callbacks stay on one device
        state, placement = shard_population(state, config.evolution.pop_size)
        print_fn(placement)
    step = jax.jit(chunk, donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - start
    release_freed_memory()
    print_fn(f"compiled in {compile_s:.1f} s (peak host memory {peak_rss_mib():.0f} MiB, "
             f"now {current_rss_mib():.0f} MiB)")
    rows: list[dict] = []
    bar = tqdm(total=config.frames, unit="frame", disable=not progress, dynamic_ncols=True)
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        while int(state.frames) <= config.frames:  # official: while num_frames <= budget
            first = int(state.generation) + 1
            state, metrics = step(state)
            frames_before = rows[-1]["frames"] if rows else 0
            new_rows = metric_rows(metrics, first, time.perf_counter() - start)
            writer.writerows(new_rows)
            f.flush()
            rows.extend(new_rows)
            last = new_rows[-1]
            bar.update(min(last["frames"], config.frames) - min(frames_before, config.frames))
            elapsed = time.perf_counter() - start
            if analyze_every and config.has_population and (last["generation"] // analyze_every
                                                            > (first - 1) // analyze_every):
                _analyze_during_run(trainer, state, out_dir, last["generation"], analyze_draws, bar)
            bar.set_postfix(gen=last["generation"], gen_s=f"{last['generation'] / elapsed:.2f}",
                            fps=f"{last['frames'] / elapsed:.0f}", test=f"{last['champion_test']:.1f}",
                            rl=f"{last['rl_test']:.1f}")
    bar.close()
    wall = time.perf_counter() - start
    if config.has_population:
        save_snapshot(state, out_dir)
    last = rows[-1]
    summary = {
        "generations": last["generation"], "frames": last["frames"], "wall_s": round(wall, 1),
        "frames_per_s": round(last["frames"] / wall, 1), "compile_s": round(compile_s, 1),
        "peak_rss_mib": round(peak_rss_mib()), "final_rss_mib": round(current_rss_mib()),
        "final_champion_test": last["champion_test"], "final_rl_test": last["rl_test"],
        "best_champion_test": max(r["champion_test"] for r in rows if not math.isnan(r["champion_test"])),
        "out": str(out_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_fn(f"done: {summary['generations']} generations, {summary['frames']} frames in {summary['wall_s']} s "
             f"({summary['frames_per_s']} frames/s); champion test {summary['final_champion_test']:.1f} "
             f"(best {summary['best_champion_test']:.1f}), RL actor {summary['final_rl_test']:.1f}; "
             f"results in {out_dir}/metrics.csv")
    return summary


def _analyze_during_run(trainer, state, out_dir: Path, generation: int, draws: int, bar) -> None:
    from pderl_jax.analysis import analyze, format_summary

    key = jax.random.fold_in(jax.random.key(trainer.config.seed + 1_000_003), generation)
    summary = analyze(trainer, key, state.population, state.memories, state.learner.critic,
                      out_dir / "analysis" / f"gen_{generation:05d}", draws=draws,
                      metrics_csv=out_dir / "metrics.csv")
    bar.write(f"generation {generation}: " + format_summary(summary))


__all__ = ["train", "metric_rows", "environment_record", "environment_from_record", "CSV_COLUMNS"]
