"""Learner presets: named sets of learner and network settings, each value with its source.

A preset fixes how the off-policy learner (and so the networks the population evolves) is
built and trained. `official` is the PDERL code's DDPG, the default of every mode but `td3`;
`td3-2018` is TD3 as its authors ran it for their released learning curves, the default of
`--mode td3`. A preset is applied over the defaults and the task's file; `--set` (or a config
file's own values) still overrides any single value afterwards.

Sources (read from the authors' repositories):
- PDERL: crisbodnar/pderl `core/ddpg.py`, `parameters.py` (the defaults in `config.py`).
- TD3 2018: sfujim/TD3 at commit bc98e62 (2018-06-09, "Camera-ready cleanup"), the last commit
  that changed the released curves (`learning_curves/`, -v1 tasks, 10 seeds): `main.py`,
  `TD3.py`, `OurDDPG.py`, `utils.py`, `run_experiments.sh`.
- TD3 current: sfujim/TD3 at 34770cc (2023): `main.py`, `TD3.py`, `OurDDPG.py` (start_timesteps
  25e3 since ade6260, 256-256 and lr 3e-4 since the 2019 rewrite); CleanRL's `td3_continuous_action`
  and Stable-Baselines3's TD3 defaults use the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TD3_2018 = "sfujim/TD3@bc98e62"
TD3_CURRENT = "sfujim/TD3@34770cc"


@dataclass(frozen=True)
class Preset:
    """A named set of settings ("section.field": value), per-task values, and the source of each."""

    name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # "section.field": {task: value}
    sources: dict[str, str] = field(default_factory=dict)  # "section.field": where the value comes from

    def settings(self, task: str) -> dict[str, Any]:
        """Every value this preset sets on `task`."""
        return {**self.values, **{name: by_task[task] for name, by_task in self.per_task.items()}}

    @property
    def algorithm(self) -> str | None:
        """The learner this preset is (None: it leaves the choice to the mode or --learner)."""
        return self.values.get("learner.algorithm")


def _mlp_td3_network(width: tuple[int, ...], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    values = {
        "network.actor_hidden": width, "network.actor_activation": "relu", "network.critic_layout": "concat",
        "network.critic_hidden": width, "network.critic_activation": "relu", "network.use_layer_norm": False,
        "network.rl_actor_output_scale": 1.0, "network.critic_output_scale": 1.0,
    }
    sources = {name: f"{source} TD3.py: Actor/Critic (nn.Linear layers, PyTorch default init)" for name in values}
    sources["network.critic_layout"] = f"{source} TD3.py: Critic l1 = nn.Linear(state_dim + action_dim, ...)"
    return values, sources


_WARMUP_2018 = {"halfcheetah": 10_000, "ant": 10_000, "hopper": 1_000, "walker2d": 1_000, "swimmer": 1_000}


def _td3_2018() -> Preset:
    network, network_sources = _mlp_td3_network((400, 300), TD3_2018)
    values = {
        **network,
        "learner.algorithm": "td3",
        "learner.actor_lr": 1e-3, "learner.critic_lr": 1e-3,
        "learner.batch_size": 100,
        # 2018 trains after every episode from the first on (`if total_timesteps != 0`), one
        # iteration per step of the episode; our learner needs a batch in the replay first.
        "learner.learning_starts": 100,
        "learner.replay_capacity": 1_000_000,
        "learner.updates_per_frame": 1.0,
        "learner.tau": 0.005, "learner.gamma": 0.99,
        "learner.policy_delay": 2, "learner.policy_noise": 0.2, "learner.noise_clip": 0.5,
        "learner.exploration": "gaussian", "learner.gaussian_noise_std": 0.1,
        "learner.bootstrap_on_timeout": True,
        "learner.grad_clip_norm": 0.0,
    }
    sources = {
        **network_sources,
        "learner.algorithm": f"{TD3_2018} main.py --policy_name TD3",
        "learner.actor_lr": f"{TD3_2018} TD3.py: torch.optim.Adam(...) with PyTorch's default lr 1e-3",
        "learner.critic_lr": f"{TD3_2018} TD3.py: torch.optim.Adam(...) with PyTorch's default lr 1e-3",
        "learner.batch_size": f"{TD3_2018} main.py --batch_size 100",
        "learner.learning_starts": f"{TD3_2018} main.py trains from the first episode's end; a batch is needed here",
        "learner.replay_capacity": f"{TD3_2018} utils.py: unbounded list (1e6 covers every run here)",
        "learner.updates_per_frame": f"{TD3_2018} main.py: policy.train(replay_buffer, episode_timesteps, ...)",
        "learner.tau": f"{TD3_2018} main.py --tau 0.005, applied in the delayed block of TD3.train",
        "learner.gamma": f"{TD3_2018} main.py --discount 0.99",
        "learner.policy_delay": f"{TD3_2018} main.py --policy_freq 2",
        "learner.policy_noise": f"{TD3_2018} main.py --policy_noise 0.2",
        "learner.noise_clip": f"{TD3_2018} main.py --noise_clip 0.5",
        "learner.exploration": f"{TD3_2018} main.py: action + np.random.normal(0, expl_noise), clipped",
        "learner.gaussian_noise_std": f"{TD3_2018} main.py --expl_noise 0.1",
        "learner.bootstrap_on_timeout": f"{TD3_2018} main.py: done_bool = 0 at env._max_episode_steps",
        "learner.grad_clip_norm": f"{TD3_2018} TD3.py: no gradient clipping",
        "learner.warmup_frames": f"{TD3_2018} run_experiments.sh --start_timesteps (10000 HalfCheetah and Ant, "
                                 "1000 Hopper and Walker2d; Swimmer was not run, 1000 as the other small tasks)",
    }
    return Preset("td3-2018", "TD3 as its authors ran it for the paper's released curves (400-300 ReLU, "
                  "lr 1e-3, batch 100, random warm-up)", values, {"learner.warmup_frames": dict(_WARMUP_2018)},
                  sources)


def _ourddpg_2018() -> Preset:
    td3 = _td3_2018()
    values = {name: value for name, value in td3.values.items()
              if name not in ("learner.policy_delay", "learner.policy_noise", "learner.noise_clip")}
    values["learner.algorithm"] = "ddpg"
    sources = {name: source.replace("TD3.py", "OurDDPG.py") for name, source in td3.sources.items()
               if name in values or name in td3.per_task}
    sources["learner.algorithm"] = f"{TD3_2018} main.py --policy_name OurDDPG (actor and targets every step)"
    return Preset("ourddpg-2018", "the TD3 authors' DDPG (\"OurDDPG\"): td3-2018 without twin critics, target "
                  "smoothing or delay", values, td3.per_task, sources)


def _td3_current() -> Preset:
    network, network_sources = _mlp_td3_network((256, 256), TD3_CURRENT)
    td3 = _td3_2018()
    values = {**td3.values, **network, "learner.actor_lr": 3e-4, "learner.critic_lr": 3e-4, "learner.batch_size": 256,
              # trains only once t >= start_timesteps: the replay then holds start_timesteps + 1 items
              "learner.learning_starts": 25_000}
    sources = {**{name: source.replace(TD3_2018, TD3_CURRENT) for name, source in td3.sources.items()},
               **network_sources,
               "learner.actor_lr": f"{TD3_CURRENT} TD3.py: Adam(lr=3e-4)",
               "learner.critic_lr": f"{TD3_CURRENT} TD3.py: Adam(lr=3e-4)",
               "learner.batch_size": f"{TD3_CURRENT} main.py --batch_size 256",
               "learner.learning_starts": f"{TD3_CURRENT} main.py: if t >= args.start_timesteps: policy.train(...)",
               "learner.warmup_frames": f"{TD3_CURRENT} main.py --start_timesteps 25e3 (CleanRL: learning_starts 25e3)",
               "learner.updates_per_frame": f"{TD3_CURRENT} main.py: one policy.train per environment step"}
    return Preset("td3-current", "the TD3 authors' current defaults, also CleanRL's and SB3's (256-256, lr 3e-4, "
                  "batch 256, 25,000 random frames)", values, {"learner.warmup_frames": dict.fromkeys(_WARMUP_2018, 25_000)},
                  sources)


OFFICIAL = Preset("official", "the official PDERL code's DDPG (LayerNorm tanh 128-128 actors, split ELU critic, "
                  "lr 5e-5/5e-4, tau 0.001, OU noise)", sources={"*": "crisbodnar/pderl core/ddpg.py, parameters.py"})
PRESETS: dict[str, Preset] = {p.name: p for p in (OFFICIAL, _td3_2018(), _ourddpg_2018(), _td3_current())}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# PPO's presets are brax PPO settings (experiments/ppo_presets.py); these name its default and the one
# PPO ran on before PPO presets (0.8).
PPO_DEFAULT_PRESET = "cleanrl"
PPO_EARLIER_PRESET = "brax-notebook"
PPO_BRAX_LOSS_PRESET = "cleanrl-brax-loss"  # cleanrl's settings with brax's loss: `cleanrl` until 0.8.0


def default_preset(mode: str) -> str:
    """`td3-2018` for `--mode td3` (TD3 as its authors ran it), `cleanrl` for PPO; `official` for every
    other mode."""
    return {"td3": "td3-2018", "ppo": PPO_DEFAULT_PRESET}.get(mode, "official")


def recorded_preset(record: dict) -> str:
    """The preset a run's config.json (or a config dict) names; records written before presets: official
    (PPO: brax-notebook); PPO runs of `cleanrl` recorded before its loss was CleanRL's: cleanrl-brax-loss."""
    preset = record.get("preset", PPO_EARLIER_PRESET if record.get("mode") == "ppo" else OFFICIAL.name)
    if record.get("mode") == "ppo" and preset == PPO_DEFAULT_PRESET and "loss" not in record:
        return PPO_BRAX_LOSS_PRESET
    return preset


def with_preset(name: str, method: str, preset: str) -> str:
    """`name` of a `method` run, with " @ preset" when the preset is not the method's default."""
    return name if preset == default_preset(method) else f"{name} @ {preset}"


def describe_presets() -> str:
    """One line per preset, for --help."""
    return "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())


__all__ = ["OFFICIAL", "PPO_BRAX_LOSS_PRESET", "PPO_DEFAULT_PRESET", "PPO_EARLIER_PRESET", "PRESETS", "Preset", "default_preset", "describe_presets", "get_preset", "recorded_preset",
           "with_preset"]
