"""PPO presets: named settings of brax's PPO (`brax.training.agents.ppo.train`), each from a named source.

`cleanrl` (the comparison's default) is PPO as the field benchmarks it on MuJoCo: CleanRL's
`ppo_continuous_action.py` (vwxyzjn/cleanrl @ fe8d8a0), which reproduces OpenAI Baselines'
`ppo2` MuJoCo defaults (openai/baselines @ ea25b9e, `ppo2/defaults.py: mujoco()`), the PPO the
paper's Table 1 ran. brax expresses most of it directly; what it cannot is listed in
`CLEANRL_DEPARTURES`, and what this package adds around brax to close the gap (reward
normalisation, observation clipping, action clipping, the network's initialisation) is done
here and in `ppo.py`. `brax-notebook` keeps the settings of brax's training notebook, tuned for
thousands of parallel environments, with the batch shrunk to fit short budgets.
"""

from __future__ import annotations

import dataclasses
import math

from pderl_jax.config import ConfigError
from pderl_jax.presets import PPO_BRAX_LOSS_PRESET, PPO_DEFAULT_PRESET


@dataclasses.dataclass(frozen=True)
class PpoPreset:
    name: str
    summary: str
    source: str
    train_kwargs: dict  # arguments of brax's ppo.train
    network: dict  # arguments of brax's make_ppo_networks (initialisers by name, see `ppo.network_factory`)
    reward_normalisation: bool = False  # Baselines' VecNormalize of rewards: / running std of the return, clip
    reward_clip: float = 10.0
    observation_clip: float | None = None  # clip normalised observations to +-this
    clip_actions: bool = False  # actions clipped to the action box before the task sees them
    fresh_resets: bool = False  # a finished episode restarts from a new initial state (brax: from its first one)
    scale_to_budget: bool = False  # halve the batch until the budget holds MIN_ITERATIONS iterations
    loss: str = "brax"  # "brax": brax's own; "cleanrl": ppo_loss.cleanrl_loss (advantages fixed per rollout)

    @property
    def env_wrappers(self) -> bool:
        """Whether brax's training wrappers give way to `ppo_wrappers.cleanrl_wrap`."""
        return self.clip_actions or self.fresh_resets or self.reward_normalisation


CLEANRL = PpoPreset(
    name="cleanrl",
    summary="CleanRL ppo_continuous_action (= Baselines ppo2 MuJoCo): 1 env, 2048-step rollouts, 10 epochs of "
            "32 minibatches, GAE 0.95, gamma 0.99, clip 0.2, lr 3e-4, 64-64 tanh, obs and reward normalisation",
    source="vwxyzjn/cleanrl@fe8d8a03 cleanrl/ppo_continuous_action.py (Args and Agent); "
           "openai/baselines@ea25b9e baselines/ppo2/defaults.py mujoco(), common/vec_env/vec_normalize.py",
    train_kwargs=dict(
        num_envs=1,  # num_envs 1
        # one iteration = batch_size * num_minibatches sequences of unroll_length steps = 1 * 32 * 64 = 2048
        # steps (num_steps 2048); each epoch splits them into 32 minibatches of 64 steps (num_minibatches 32)
        unroll_length=64, batch_size=1, num_minibatches=32,
        num_updates_per_batch=10,  # update_epochs 10
        discounting=0.99,  # gamma
        gae_lambda=0.95,  # gae_lambda
        learning_rate=3e-4,  # learning_rate (annealing: see CLEANRL_DEPARTURES)
        clipping_epsilon=0.2,  # clip_coef
        clipping_epsilon_value=0.2,  # clip_vloss with clip_coef
        entropy_cost=0.0,  # ent_coef
        vf_loss_coefficient=0.5,  # vf_coef
        max_grad_norm=0.5,  # max_grad_norm
        normalize_advantage=True,  # norm_adv (per minibatch)
        normalize_observations=True,  # gym NormalizeObservation
        normalize_observations_std_eps=1e-8,  # its epsilon
        reward_scaling=1.0,
        action_repeat=1,
    ),
    network=dict(
        policy_hidden_layer_sizes=(64, 64), value_hidden_layer_sizes=(64, 64), activation="tanh",
        distribution_type="normal", noise_std_type="log", init_noise_std=1.0,  # Gaussian, state-free log std 0
        kernel_init="orthogonal", kernel_init_scale=math.sqrt(2), mean_kernel_init_scale=0.01,  # layer_init
    ),
    reward_normalisation=True,  # gym NormalizeReward(gamma=0.99) then clip +-10
    reward_clip=10.0,
    observation_clip=10.0,  # TransformObservation clip +-10
    clip_actions=True,  # gym ClipAction
    fresh_resets=True,  # gym vector environments reset a finished episode afresh
    loss="cleanrl",  # advantages and returns once per rollout from its critic, time limits end returns
)

# The same settings with brax's own loss, which recomputes the advantages with the critic of the moment at
# every minibatch: the `cleanrl` preset until 0.8.0, kept to reproduce its runs and to measure the difference.
CLEANRL_BRAX_LOSS = dataclasses.replace(
    CLEANRL, name=PPO_BRAX_LOSS_PRESET, loss="brax",
    summary=CLEANRL.summary + "; brax's own loss (advantages recomputed with the current critic)")

# What brax's PPO does differently from CleanRL with the preset above, and why it is left so.
CLEANRL_DEPARTURES = (
    "learning rate: constant 3e-4 (CleanRL anneals it linearly to 0 over the run); brax offers only an "
    "adaptive-KL schedule",
    "Adam epsilon: optax's 1e-8 (CleanRL 1e-5); brax builds the optimiser itself",
    "minibatches: 32 contiguous 64-step segments of the rollout, reshuffled each epoch (CleanRL: 64 random "
    "steps); GAE runs per segment, bootstrapped at the segment's end by the critic of the moment (CleanRL: "
    "once over the rollout)",
    "critic's last layer: orthogonal with gain sqrt(2) (CleanRL 1.0); brax has one initialiser per network",
)

BRAX_NOTEBOOK = PpoPreset(
    name="brax-notebook",
    summary="brax's training notebook per task (2048 parallel environments, tuned for tens of millions of "
            "steps), the batch halved until the budget holds 20 iterations",
    source="google/brax notebooks/training.ipynb, its PPO cells",
    train_kwargs={},  # per task: ppo.BRAX_NOTEBOOK_SETTINGS
    network={},
    scale_to_budget=True,
)

PPO_PRESETS = {preset.name: preset for preset in (CLEANRL, CLEANRL_BRAX_LOSS, BRAX_NOTEBOOK)}
DEFAULT_PPO_PRESET = PPO_DEFAULT_PRESET
assert DEFAULT_PPO_PRESET in PPO_PRESETS


def get_ppo_preset(name: str) -> PpoPreset:
    if name not in PPO_PRESETS:
        raise ConfigError(f"unknown PPO preset {name!r}; choose one of {', '.join(PPO_PRESETS)}")
    return PPO_PRESETS[name]


__all__ = ["BRAX_NOTEBOOK", "CLEANRL", "CLEANRL_BRAX_LOSS", "CLEANRL_DEPARTURES", "DEFAULT_PPO_PRESET", "PPO_PRESETS", "PpoPreset",
           "get_ppo_preset"]
