"""A run folder: claiming it, the `config.json` record of a run, and reopening a finished or stopped run."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp

from pderl_jax.config import RECORDED_BACKENDS, Config, ConfigError, from_dict, to_dict, validate
from pderl_jax.envs import Environment, make_environment
from pderl_jax.training.checkpoint import CHECKPOINT_DIR, DAMAGED_DIR, CheckpointOptions, Checkpointer
from pderl_jax.training.driver import RunOptions
from pderl_jax.training.generation import Trainer, TrainState
from pderl_jax.training.metrics import METRICS_FILE



def environment_record(env: Environment) -> dict:
    """What `config.json` records of the environment (enough to rebuild it); brax's physics too."""
    record = {"name": env.task, "backend": env.backend, "episode_length": env.episode_length}
    if env.physics is not None:
        record["physics"] = env.physics
    if env.options:
        record["options"] = env.options
    return record


def environment_from_record(record: dict, task: str) -> Environment:
    """The environment a `config.json` environment record describes (inverse of `environment_record`).
    Records of version 0.2.0 name brax's physics pipeline as the backend, records before 0.8 native
    MuJoCo "gymnasium"."""
    backend, length = RECORDED_BACKENDS.get(record["backend"], record["backend"]), record["episode_length"]
    if "physics" in record or backend not in ("native", "mjx"):
        return make_environment(task, "brax", physics=record.get("physics", backend), episode_length=length)
    return make_environment(task, backend, episode_length=length, options=record.get("options"))


# What a run writes into its folder (all removed by --force, nothing else is).
RUN_FILES = ("config.json", METRICS_FILE, "summary.json", "learning_curve.png", CHECKPOINT_DIR, DAMAGED_DIR,
             "tensorboard", "analysis")


def claim_out_dir(out_dir: Path, record: dict, force: bool, files: tuple[str, ...] = RUN_FILES) -> None:
    """Make `out_dir` ready for a new run and write its `config.json`; never silently overwrite results.

    Only the files a run writes (`files`) are removed with `force`; anything else stays.
    """
    check_out_dir(out_dir, record, force, files)
    prepare_out_dir(out_dir, record, files)


def prepare_out_dir(out_dir: Path, record: dict, files: tuple[str, ...] = RUN_FILES,
                    record_file: str = "config.json") -> None:
    """Remove the files a run writes from a folder `check_out_dir` accepted, and write the record
    (`config.json`)."""
    for name in files:
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / record_file).write_text(json.dumps(record, indent=2))


def check_out_dir(out_dir: Path, record: dict, force: bool, files: tuple[str, ...] = RUN_FILES) -> None:
    """Refuse a folder that holds another run's results (without `force`); changes nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; choose a folder")
    existing = [name for name in files if (out_dir / name).exists() and name != "config.json"]
    if existing and not force:
        previous = out_dir / "config.json"
        same = previous.exists() and json.loads(previous.read_text()) == record
        what = "this run (same settings)" if same else "a different run"
        raise ConfigError(f"{out_dir} already holds {what} ({', '.join(existing)}); continue it with "
                          f"--resume {out_dir}, choose another --out, or pass --force to overwrite it")


def run_record(config: Config, env: Environment, options: RunOptions | None = None) -> dict:
    """The `config.json` of a run: every setting, the environment and how the run is driven."""
    record = {**to_dict(config), "environment": environment_record(env)}
    if options is not None:
        record["run"] = {"generations_per_call": options.generations_per_call,
                         "max_generations": options.max_generations, "checkpoint_every": options.checkpoint.every,
                         "keep_checkpoints": options.checkpoint.keep, "checkpoint_replay": options.checkpoint.replay}
    return record


def read_run_config(run_dir: Path) -> tuple[Config, dict, dict]:
    """(config, environment record, run options record) of a folder written by `train`, or of a sweep's
    run (whose swept values are recorded apart as well)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: pass a folder written by pderl-jax train (or a sweep's run_<i>)")
    try:
        raw = json.loads(path.read_text())
        environment, run = raw.pop("environment"), raw.pop("run", {})
        raw.pop("sweep", None)
    except (ValueError, KeyError, AttributeError) as error:
        raise ConfigError(f"{path} is not a run's config.json ({error})") from None
    config = from_dict(raw)
    validate(config)
    return config, environment, run


def check_resume_fits(run_dir: Path, config: Config, like: TrainState, env: Environment) -> None:
    """Refuse, before any checkpoint is read or moved, settings (`config`, whose training state has the
    shapes `like`) that give the state another layout than the run in `run_dir` recorded (other
    networks, sizes or mode): its checkpoints would not restore into it. The message names the
    settings that differ."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return  # nothing recorded: the checkpoints are looked for and judged as they are
    recorded, _, _ = read_run_config(run_dir)

    def layout(state: TrainState):
        return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]

    if layout(jax.eval_shape(Trainer(recorded, env).init, jax.random.key(0))) == layout(like):
        return
    was, now = _flat(to_dict(recorded)), _flat(to_dict(config))
    changed = [f"{name} = {now.get(name)!r} (recorded {was.get(name)!r})" for name in sorted(set(was) | set(now))
               if was.get(name) != now.get(name) and name not in ("frames", "seed")]
    raise ConfigError(
        f"{path}: the settings given would give the run's training state another layout than its checkpoints "
        f"hold ({'; '.join(changed) or 'the environment differs'}); a run resumes with the settings it started "
        "with: drop the changed settings, or start a new run in another folder")


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


@dataclass
class SavedRun:
    """A run folder's settings, environment and newest intact checkpoint."""

    path: Path
    config: Config
    env: Environment
    trainer: Trainer
    state: TrainState
    meta: dict


def open_run(run_dir: Path, print_fn: Callable[[str], None] = print) -> SavedRun:
    """Rebuild a run's environment and trainer from `config.json` and restore its newest intact checkpoint."""
    config, environment, _ = read_run_config(run_dir)
    env = environment_from_record(environment, config.task)
    trainer = Trainer(config, env)
    like = jax.eval_shape(trainer.init, jax.random.key(0))
    restored = Checkpointer(run_dir, CheckpointOptions()).restore_latest(
        like, fresh_replay=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), like.replay), report=print_fn)
    if restored is None:
        raise ConfigError(f"no intact checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: the run wrote none yet "
                          "(checkpoints are written every --checkpoint-every generations and at the end)")
    state, meta = restored
    return SavedRun(Path(run_dir), config, env, trainer, state, meta)


__all__ = ["RUN_FILES", "claim_out_dir", "check_out_dir", "prepare_out_dir", "run_record", "read_run_config",
           "environment_record", "environment_from_record", "SavedRun", "open_run"]
