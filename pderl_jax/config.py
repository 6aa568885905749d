"""Typed configuration: every hyperparameter of PDERL and its baselines, with the official values.

Defaults are the paper's Table 3 values as the official code sets them; `configs/<task>.toml`
adds the per-task Table 4 values. The sections are `flax.struct` dataclasses: float fields are
pytree leaves (so a sweep can vmap over them), structural fields (sizes, choices) are static.

Options that fix a discrepancy between the paper and the official code keep the official
behaviour by default; each names its item ("ref. #N") in docs/paper-and-official-code.md.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from flax import struct

from pderl_jax.presets import PRESETS, default_preset, get_preset

ACTIVATION_NAMES = ("tanh", "relu", "elu")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: a wheel install carries them
TASKS = ("swimmer", "halfcheetah", "hopper", "walker2d", "ant")
RECORDED_BACKENDS = {"gymnasium": "native"}  # backend names in the run records of earlier versions (before 0.8)
EVOLUTIONARY_MODES = {
    # mode: (crossover, mutation)
    "pderl": ("distillation", "proximal"),
    "perl": ("npoint", "proximal"),
    "derl": ("distillation", "gaussian"),
    "erl": ("npoint", "gaussian"),
}
# The off-policy learner alone, without a population (the paper's DDPG/TD3 baselines).
LEARNER_MODES = ("ddpg", "td3")
MODES = (*EVOLUTIONARY_MODES, *LEARNER_MODES)


def default_learner(mode: str) -> str:
    """The learner a mode trains unless told otherwise: its own in ddpg/td3, DDPG (official) beside a population."""
    return mode if mode in LEARNER_MODES else "ddpg"


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and what is allowed."""


class TrainingDiverged(ConfigError):
    """A loss, parameter or return became NaN or infinite; the run stopped before checkpointing it."""


def static(default):
    return struct.field(pytree_node=False, default=default)


@struct.dataclass
class NetworkConfig:
    """The actor (population members and RL actor alike) and the critic.

    Defaults: the official ERL/PDERL architectures (paper: "identical to ERL"). The td3-2018
    preset gives the TD3 authors' 400-300 ReLU networks (see `presets.py`).
    """

    actor_hidden: tuple[int, ...] = static((128, 128))
    actor_activation: str = static("tanh")  # hidden layers; the output is always tanh
    # "split": the official critic, state and action through branches of critic_input_width each,
    # then critic_hidden_width; "concat": [state, action] through the layers of critic_hidden.
    critic_layout: str = static("split")
    critic_input_width: int = static(200)
    critic_hidden_width: int = static(300)
    critic_hidden: tuple[int, ...] = static((400, 300))  # critic_layout = "concat" only
    critic_activation: str = static("elu")
    use_layer_norm: bool = static(True)  # the official LayerNorm after every hidden Linear
    rl_actor_output_scale: float = static(0.1)  # official `Actor(init=True)` for the RL actor
    critic_output_scale: float = static(0.1)  # official critic: output layer's init x 0.1


@struct.dataclass
class LearnerConfig:
    """The off-policy learner: DDPG exactly as the official code, or TD3 as an option."""

    algorithm: str = static("ddpg")  # "ddpg" (official) | "td3"
    batch_size: int = static(128)
    replay_capacity: int = static(1_000_000)
    learning_starts: int = static(640)  # update only when the replay holds MORE than this
    updates_per_frame: float = static(1.0)  # official frac_frames_train
    # > 0: exactly this many updates per generation instead (large populations, where one update
    # per frame would make the learner the whole generation).
    updates_per_generation: int = static(0)
    policy_delay: int = static(2)  # TD3 only
    exploration: str = static("ou")  # "ou" (official, never reset) | "gaussian"
    # Ref. #13: timeouts are stored as terminal; True bootstraps through time-limit ends.
    bootstrap_on_timeout: bool = static(False)
    # The RL actor's exploration acts uniformly at random while the run has stored fewer frames
    # (counted and stored like any other; TD3's start_timesteps). 0: never (official).
    warmup_frames: int = static(0)
    actor_lr: float = 5e-5
    critic_lr: float = 5e-4
    tau: float = 0.001
    gamma: float = 0.99
    grad_clip_norm: float = 10.0  # 0: no clipping
    policy_noise: float = 0.2  # TD3 target smoothing std
    noise_clip: float = 0.5  # TD3 target smoothing clip
    ou_theta: float = 0.15
    ou_sigma: float = 0.2
    ou_scale: float = 0.3
    gaussian_noise_std: float = 0.1  # exploration="gaussian"


@struct.dataclass
class EvolutionConfig:
    """Population, selection and the genetic operators."""

    pop_size: int = static(10)
    elite_fraction: float = static(0.1)
    num_evals: int = static(1)  # xi: episodes per fitness evaluation
    sync_period: int = static(10)  # omega: generations between RL -> population copies
    tournament_size: int = static(3)
    genetic_memory_capacity: int = static(8000)  # kappa
    # Parent pairing for distillation: greedy fitness sum (official default), behaviour
    # distance, or a convex mix of the two normalised scores (suggested in the paper).
    pairing: str = static("fitness")  # "fitness" | "distance" | "mixed"
    distance_metric: str = static("paper")  # "paper" d_Pi | "official" (stored actions, ref. #6)
    distance_batch_size: int = static(256)
    distance_window: int = static(1000)  # official: sample from the latest 1000 transitions
    pairing_mix: float = 0.5  # weight of the distance score when pairing="mixed"
    # Ref. #5 and #12: official quirks kept by default.
    fix_elite_fitness: bool = static(False)
    protect_all_elites: bool = static(False)
    # Distillation crossover (N_C, epochs, lr from Table 3).
    distill_batch_size: int = static(128)
    distill_epochs: int = static(12)
    distillation_loss: str = static("official")  # "official" | "paper" (ref. #1, #2)
    shuffle_child_memory: bool = static(True)  # ref. #16
    distill_lr: float = 1e-3
    # Children distilled simultaneously (vmapped); 0 = auto: 1 on CPU, all on accelerators.
    children_in_parallel: int = static(0)
    # Mutation.
    mutation_prob: float = 0.9
    mutation_sigma: float = 0.1  # proximal sigma (Table 4)
    mutation_sigma_noise: float = 0.0  # official -mut_noise uses 0.02: sigma ~ N(sigma, 0.02)
    proximal_batch_size: int = static(256)  # N_M
    sensitivity_reduce: str = static("sum")  # "sum" (official SM-G-SUM) | "mean" (ref. #25)
    gaussian_strength: float = 0.1
    gaussian_fraction: float = static(0.1)  # sets a loop bound, hence static
    super_mutation_strength: float = 10.0
    super_mutation_prob: float = 0.05
    reset_prob: float = 0.05

    @property
    def num_elites(self) -> int:
        return max(1, int(self.elite_fraction * self.pop_size))


@struct.dataclass
class Config:
    """One experiment."""

    task: str = static("halfcheetah")
    mode: str = static("pderl")  # "pderl" | "perl" | "derl" | "erl" | "ddpg" | "td3"
    # The learner preset whose values the network and learner sections started from (presets.py);
    # recorded for the reader, the values themselves are in the sections.
    preset: str = static("official")
    seed: int = static(7)  # official default seed
    frames: int = static(6_000_000)
    network: NetworkConfig = struct.field(default_factory=NetworkConfig)
    learner: LearnerConfig = struct.field(default_factory=LearnerConfig)
    evolution: EvolutionConfig = struct.field(default_factory=EvolutionConfig)

    @property
    def has_population(self) -> bool:
        """False for the learner-only modes (ddpg, td3)."""
        return self.mode in EVOLUTIONARY_MODES

    @property
    def crossover(self) -> str:
        """"distillation" (PDERL, DERL), "npoint" (ERL, PERL) or "none" (learner only)."""
        return EVOLUTIONARY_MODES[self.mode][0] if self.has_population else "none"

    @property
    def mutation(self) -> str:
        """"proximal" (PDERL, PERL), "gaussian" (ERL, DERL) or "none" (learner only)."""
        return EVOLUTIONARY_MODES[self.mode][1] if self.has_population else "none"


SECTIONS = {"network": NetworkConfig, "learner": LearnerConfig, "evolution": EvolutionConfig}

CHOICES = {
    "task": TASKS,
    "mode": tuple(MODES),
    "learner.algorithm": ("ddpg", "td3"),
    "learner.exploration": ("ou", "gaussian"),
    "preset": tuple(PRESETS),
    "network.actor_activation": tuple(ACTIVATION_NAMES),
    "network.critic_activation": tuple(ACTIVATION_NAMES),
    "network.critic_layout": ("split", "concat"),
    "evolution.pairing": ("fitness", "distance", "mixed"),
    "evolution.distance_metric": ("paper", "official"),
    "evolution.distillation_loss": ("official", "paper"),
    "evolution.sensitivity_reduce": ("sum", "mean"),
}


SEEDS_HELP = "a count (3: seeds 0, 1, 2), a range (5..7: seeds 5, 6, 7) or a list (0,4,9; one seed alone: 4,)"


def parse_seeds(text: str) -> list[int]:
    """`--seeds`, the same in every command: a count N (seeds 0..N-1), a range A..B (inclusive) or a
    list A,B,C."""
    text = text.strip()
    try:
        if ".." in text:
            first, last = (int(x) for x in text.split(".."))
            seeds = list(range(first, last + 1))
        elif "," in text:
            seeds = [int(x) for x in text.split(",") if x.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = list(range(count))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: use {SEEDS_HELP}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} must name at least one seed, each once; use {SEEDS_HELP}")
    return seeds


def load_config(task: str, overrides: dict[str, Any] | None = None) -> Config:
    """The defaults, the learner preset, the task's config file, then `overrides` ("section.field": value).

    The preset is `overrides["preset"]`, else the file's, else the mode's default (`td3-2018` for
    mode td3, `official` otherwise). Unless `learner.algorithm` is given, it is the preset's
    learner, else the mode's (`default_learner`).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    path = CONFIG_DIR / f"{task}.toml"
    if not path.exists():
        raise ConfigError(f"{path} is missing: the package is installed without its configs; reinstall it "
                          "(pip install --force-reinstall pderl-jax, or pip install -e . in a checkout)")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    overrides = dict(overrides or {})
    mode = overrides.get("mode", raw.get("mode", Config.mode))
    raw["preset"] = overrides.pop("preset", None) or raw.get("preset") or default_preset(mode)
    config = from_dict(raw)
    if "learner.algorithm" not in overrides and get_preset(config.preset).algorithm is None:
        overrides = {"learner.algorithm": default_learner(mode), **overrides}
    return with_overrides(config, overrides)


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """`config` with every `override` applied, then validated."""
    for dotted, value in overrides.items():
        config = override(config, dotted, value)
    validate(config)
    return config


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a `Config` from nested dicts (as read from TOML), rejecting unknown keys.

    A top-level `preset` starts the network and learner sections from that preset's values;
    the dict's own values then override them. Records without one are the official preset's.
    """
    raw = dict(raw)
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.pop(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of settings, got {values!r}")
        sections[name] = _checked_fields(cls, values, prefix=f"{name}.")
    top = _checked_fields(Config, raw, prefix="")
    base = apply_preset(Config(**{k: v for k, v in top.items() if k in ("task", "preset")}),
                        top.get("preset", Config.preset))
    return base.replace(**top, **{name: getattr(base, name).replace(**values) for name, values in sections.items()})


def apply_preset(config: Config, name: str) -> Config:
    """`config` with every value of preset `name` (for its task) set, and the preset recorded."""
    try:
        preset = get_preset(name)
    except ValueError as e:
        raise ConfigError(f"preset = {name!r}: {e}") from None
    config = config.replace(preset=name)
    for dotted, value in preset.settings(config.task).items():
        config = override(config, dotted, value)
    return config


def override(config: Config, dotted: str, value: Any) -> Config:
    """Return `config` with one field ("mode" or "learner.actor_lr") replaced."""
    parts = dotted.split(".")
    if dotted == "preset":
        return apply_preset(config, value)
    if len(parts) == 1:
        return config.replace(**_checked_fields(Config, {dotted: value}, prefix=""))
    if len(parts) == 2 and parts[0] in SECTIONS:
        section, name = parts
        values = _checked_fields(SECTIONS[section], {name: value}, prefix=f"{section}.")
        return config.replace(**{section: getattr(config, section).replace(**values)})
    raise ConfigError(f"unknown setting {dotted!r}; use 'field' or 'section.field' with section in {sorted(SECTIONS)}")


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict (TOML/JSON-serialisable) of every setting."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def validate(config: Config) -> None:
    """Reject impossible or unknown settings with a message that names the fix."""
    _validate_choices_and_numbers(config)
    _validate_mode(config)
    _validate_counts(config)
    _validate_population(config.evolution)
    _validate_learner(config.learner)
    _validate_ranges(config)


def _validate_choices_and_numbers(config: Config) -> None:
    """Every choice is a known one and every float finite."""
    for dotted, allowed in CHOICES.items():
        value = _get(config, dotted)
        if value not in allowed:
            raise ConfigError(f"{dotted} = {value!r} is not allowed; choose one of {', '.join(allowed)}")
    for name, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            value = getattr(getattr(config, name), field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name}.{field.name} = {value} must be a finite number")


def _validate_mode(config: Config) -> None:
    """A learner-only mode trains its own learner."""
    learner = config.learner
    if config.mode in LEARNER_MODES and learner.algorithm != config.mode:
        if get_preset(config.preset).algorithm == learner.algorithm:
            fix = (f"preset {config.preset!r} is a {learner.algorithm} learner: pick a {config.mode} preset "
                   f"({', '.join(n for n, p in PRESETS.items() if p.algorithm in (None, config.mode))})")
        else:
            fix = f"set learner.algorithm={config.mode} (--learner {config.mode})"
        raise ConfigError(
            f"mode {config.mode!r} trains the {config.mode} learner alone, but learner.algorithm = "
            f"{learner.algorithm!r}; {fix} or pick an evolutionary mode ({', '.join(EVOLUTIONARY_MODES)})"
        )


def _validate_counts(config: Config) -> None:
    """Sizes and counts are positive."""
    for dotted in ("frames", "evolution.pop_size", "evolution.num_evals", "evolution.sync_period",
                   "evolution.tournament_size", "evolution.genetic_memory_capacity", "evolution.distill_batch_size",
                   "evolution.distill_epochs", "evolution.proximal_batch_size", "evolution.distance_batch_size",
                   "evolution.distance_window", "learner.batch_size", "learner.replay_capacity",
                   "learner.policy_delay", "network.critic_input_width", "network.critic_hidden_width"):
        if _get(config, dotted) <= 0:
            raise ConfigError(f"{dotted} = {_get(config, dotted)} must be a positive integer")


def _validate_population(evo: EvolutionConfig) -> None:
    """The population, its elites and its genetic memories fit together."""
    if evo.pop_size < 2:
        raise ConfigError(f"evolution.pop_size = {evo.pop_size}: a population needs at least 2 members")
    if not 0.0 < evo.elite_fraction < 1.0:
        raise ConfigError(f"evolution.elite_fraction = {evo.elite_fraction} must lie in (0, 1)")
    if evo.num_elites > evo.pop_size // 2:
        raise ConfigError(
            f"evolution.elite_fraction = {evo.elite_fraction} gives {evo.num_elites} elites for "
            f"pop_size {evo.pop_size}; at most half the population can be elites, since each elite clone "
            "needs a free slot (lower elite_fraction or raise pop_size)"
        )
    if evo.genetic_memory_capacity < 2:
        raise ConfigError("evolution.genetic_memory_capacity must be at least 2 (children inherit half from each parent)")


def _validate_learner(learner: LearnerConfig) -> None:
    """The learner's update count and batches fit the replay buffer."""
    if learner.updates_per_generation < 0:
        raise ConfigError(f"learner.updates_per_generation = {learner.updates_per_generation} must be >= 0 "
                          "(0: learner.updates_per_frame updates per stored frame)")
    if learner.batch_size > learner.replay_capacity:
        raise ConfigError("learner.batch_size must not exceed learner.replay_capacity")
    if learner.learning_starts < learner.batch_size:
        raise ConfigError(
            f"learner.learning_starts = {learner.learning_starts} is below learner.batch_size = "
            f"{learner.batch_size}: a batch is drawn without replacement, so the replay must hold at "
            "least a batch before learning starts (official: 5 x batch size = 640)"
        )


def _validate_ranges(config: Config) -> None:
    """Rates, probabilities, noise scales, widths and init scales lie in their ranges."""
    evo, learner = config.evolution, config.learner
    for dotted in ("learner.actor_lr", "learner.critic_lr", "evolution.distill_lr"):
        if not _get(config, dotted) > 0:
            raise ConfigError(f"{dotted} = {_get(config, dotted)} must be > 0")
    for dotted in ("learner.tau", "learner.gamma", "evolution.mutation_prob", "evolution.pairing_mix",
                   "evolution.super_mutation_prob", "evolution.reset_prob", "evolution.gaussian_fraction"):
        if not 0.0 <= _get(config, dotted) <= 1.0:
            raise ConfigError(f"{dotted} = {_get(config, dotted)} must lie in [0, 1]")
    if evo.super_mutation_prob + evo.reset_prob > 1.0:
        raise ConfigError("evolution.super_mutation_prob + evolution.reset_prob must not exceed 1")
    for dotted in ("learner.updates_per_frame", "evolution.mutation_sigma", "evolution.mutation_sigma_noise",
                   "learner.grad_clip_norm", "learner.ou_sigma", "learner.ou_scale", "learner.policy_noise",
                   "learner.noise_clip", "learner.gaussian_noise_std"):
        value = _get(config, dotted)
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{dotted} = {value} must be a finite number >= 0")
    for dotted in ("network.actor_hidden", "network.critic_hidden"):
        widths = _get(config, dotted)
        if not widths or any(int(w) <= 0 for w in widths):
            raise ConfigError(f"{dotted} = {list(widths)} must be a non-empty list of positive widths")
    for dotted in ("network.rl_actor_output_scale", "network.critic_output_scale"):
        if not _get(config, dotted) > 0:
            raise ConfigError(f"{dotted} = {_get(config, dotted)} must be > 0 (1.0: PyTorch's default init)")
    if learner.warmup_frames < 0:
        raise ConfigError(f"learner.warmup_frames = {learner.warmup_frames} must be >= 0 (0: no random warm-up)")


def _checked_fields(cls, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls) if f.name not in SECTIONS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
            f"known {'[' + prefix[:-1] + '] ' if prefix else 'top-level '}settings: {', '.join(sorted(known))}"
        )
    return {k: _coerce(cls, k, v, prefix) for k, v in values.items()}


def _coerce(cls, name: str, value: Any, prefix: str):
    default = next(f for f in dataclasses.fields(cls) if f.name == name).default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return {"true": True, "1": True, "false": False, "0": False}[value.lower()]
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            return tuple(int(v) for v in value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, KeyError):
        raise ConfigError(
            f"{prefix}{name} = {value!r} has the wrong type; expected {type(default).__name__} like {default!r}"
        ) from None
    return value


def _get(config: Config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _plain(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    return list(value) if isinstance(value, tuple) else value
