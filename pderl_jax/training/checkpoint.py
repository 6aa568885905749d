"""Checkpoints of the whole training state with orbax: exact resume, last K kept, damage detected.

A checkpoint holds everything the next generation reads (population, champion, genetic
memories, learner networks, targets and optimiser states, exploration noise, replay buffer,
selection statistics, counters and the random key), so a resumed run computes the same
generations as one that never stopped. orbax writes each step into a temporary folder and
renames it when complete, so a run killed mid-write leaves the previous checkpoint intact and
the partial one is never listed. A digest of the arrays in the step's metadata catches files
damaged afterwards; `restore_latest` then falls back to the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from pderl_jax.config import ConfigError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
FORMAT = 2  # 2: the population (members and memories) as one value inside an optional evolution state
WRITTEN_BY = {1: "pderl-jax 0.1", 2: "pderl-jax 0.2 to 0.6"}  # format -> the versions that write it


class CheckpointFormatError(ConfigError):
    """A checkpoint written in another layout of the training state; it is intact but cannot be read."""


@dataclass(frozen=True)
class CheckpointOptions:
    """How often and what to checkpoint (run options, not part of the algorithm's config)."""

    every: int = 5  # generations between checkpoints; 0: only at the end (and on Ctrl-C)
    keep: int = 3  # the newest K are kept
    replay: bool = True  # include the replay buffer (needed for an exact resume; ~170 MB at 1e6 frames)

    def validate(self) -> None:
        if self.every < 0:
            raise ConfigError(f"--checkpoint-every must be 0 (only at the end) or a positive number of "
                              f"generations, got {self.every}")
        if self.keep < 1:
            raise ConfigError(f"--keep-checkpoints must be at least 1, got {self.keep}")


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def to_host(state):
    """The state as NumPy arrays, random keys as their raw key data (what orbax can store); a state spread
    over several processes is gathered to each of them."""
    from pderl_jax.training.distributed import to_host as gathered

    return gathered(jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state))


def from_host(tree, like):
    """Inverse of `to_host`: key data wrapped back into keys wherever `like` (a state or its shapes) has keys."""
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x) if _is_key(ref) else jax.numpy.asarray(x),
                        tree, like)


def state_digest(host_tree) -> str:
    """BLAKE2b over every array's dtype, shape and bytes, in tree order."""
    digest = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree.leaves(host_tree):
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Checkpointer:
    """The checkpoints of one run folder (`OUT/checkpoints/<generation>`)."""

    def __init__(self, out_dir: Path, options: CheckpointOptions = CheckpointOptions()):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.out_dir = Path(out_dir)
        self.directory = (self.out_dir / CHECKPOINT_DIR).absolute()
        self.options = options
        self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=options.keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state, meta: dict) -> None:
        """Write the state at its generation, with `meta` (wall time, CSV rows...); a sweep's stacked runs
        share one generation."""
        tree = to_host(state if self.options.replay else state.replace(replay=None))
        meta = {**meta, "format": FORMAT, "replay": self.options.replay, "digest": state_digest(tree)}
        step = int(np.max(tree.generation))
        if step in self._manager.all_steps():  # e.g. a final save right after a periodic one
            return
        self._manager.save(step, args=self._ocp.args.Composite(state=self._ocp.args.StandardSave(tree),
                                                               meta=self._ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def restore(self, step: int, like):
        """The state saved at `step` as arrays shaped like `like` (e.g. `jax.eval_shape(trainer.init, key)`)."""
        meta = self._manager.restore(step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())).meta
        if meta.get("format") != FORMAT:
            raise CheckpointFormatError(
                f"{self.directory / str(step)} has checkpoint format {meta.get('format')!r} "
                f"({WRITTEN_BY.get(meta.get('format'), 'another version')}), this version of pderl-jax reads "
                f"format {FORMAT}: the layout of the training state differs. Continue or evaluate the run with the "
                f"version that wrote it, or start it again with --force")
        template = host_template(like if meta["replay"] else like.replace(replay=None))
        tree = self._manager.restore(step, args=self._ocp.args.Composite(
            state=self._ocp.args.StandardRestore(template))).state
        if state_digest(tree) != meta["digest"]:
            raise ValueError("the arrays do not match the digest written with them")
        return tree, meta

    def restore_latest(self, like, fresh_replay=None, report=print, shardings=None):
        """The newest checkpoint that reads back intact, as (state, meta); None if there is none.

        Damaged checkpoints (unreadable, wrong shapes, digest mismatch) are moved to
        `OUT/checkpoints_damaged/` with a message, and the previous one is tried. Without a saved
        replay buffer, `fresh_replay` (an empty buffer) takes its place. The state is placed with
        `shardings` (a tree like `like`; None: the default device), over several processes as well.
        """
        for step in reversed(self.steps()):
            try:
                tree, meta = self.restore(step, like)
            except CheckpointFormatError:
                raise  # intact, only another layout: never set aside as damaged
            except Exception as error:  # noqa: BLE001 - any failure to read means this step is unusable
                self._set_aside(step, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", report)
                continue
            saved_like = like if meta["replay"] else like.replace(replay=None)
            placed = shardings if shardings is None or meta["replay"] else shardings.replace(replay=None)
            state = jax.jit(lambda t, saved_like=saved_like: from_host(t, saved_like), out_shardings=placed)(tree)
            if not meta["replay"]:
                state = state.replace(replay=fresh_replay)
            return state, meta
        return None

    def _set_aside(self, step: int, reason: str, report) -> None:
        from pderl_jax.training.distributed import barrier, is_writer

        target = self.out_dir / DAMAGED_DIR / f"{step}"
        barrier(f"pderl-jax: checkpoint {step} found damaged")  # every process reads the same files
        if is_writer():
            target.parent.mkdir(exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.directory / str(step)), target)
        barrier(f"pderl-jax: checkpoint {step} set aside")
        self._manager.reload()
        report(f"checkpoint of generation {step} is damaged ({reason}); moved to {target}, trying the previous one")


def has_checkpoints(out_dir: Path) -> bool:
    """Whether a run folder holds a complete checkpoint (a step folder: orbax renames a checkpoint to its
    step once written). Unlike `Checkpointer(out_dir)`, it starts no orbax manager, whose folder creation
    and background clean-up would race a run started next with `force`."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return folder.is_dir() and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


def host_template(like):
    """Zero NumPy arrays shaped like `to_host` of a state (or of its `jax.eval_shape`)."""
    def zeros(x):
        shape = jax.eval_shape(jax.random.key_data, x).shape if _is_key(x) else x.shape
        return np.zeros(shape, np.uint32 if _is_key(x) else x.dtype)
    return jax.tree.map(zeros, like)


__all__ = ["CheckpointFormatError", "CheckpointOptions", "Checkpointer", "CHECKPOINT_DIR", "DAMAGED_DIR", "to_host",
           "from_host", "host_template", "state_digest"]
