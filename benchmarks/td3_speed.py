"""Frames/s of `--mode td3` (the td3-2018 preset) beside a PyTorch TD3 learner at the same settings.

usage: python benchmarks/td3_speed.py [--generations 15] [--torch-threads 1,2]
                                     [--out benchmarks/results/td3_speed_halfcheetah.json]

Both train TD3 as its authors ran it (400-300 ReLU actor and twin concatenated critics, Adam 1e-3,
batch 100, tau 0.005, policy delay 2, target noise 0.2/0.5, Gaussian exploration 0.1, timeouts
bootstrapped) on Gymnasium's HalfCheetah-v5 in native MuJoCo, with the same work per row of
metrics.csv: one 1,000-step exploration episode, one update per stored frame, five deterministic
test episodes. The PyTorch learner is written here for the comparison (plain `torch.nn`, CPU, the
authors' structure: train after each episode, as many iterations as its steps). The random
warm-up is 1,000 frames for both so that the timed episodes act with the actor; one episode is
run untimed first (and ours compiled, reported apart), then `--generations` timed ones, one
learner after the other, never side by side. Needs PyTorch (`pip install torch`, CPU build).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TASK, GYM_ID, WARMUP = "halfcheetah", "HalfCheetah-v5", 1_000
TEST_EPISODES = 5


def time_ours(generations: int, seed: int = 0) -> dict:
    """pderl-jax's `--mode td3` (preset td3-2018) on native HalfCheetah-v5."""
    from pderl_jax.config import load_config
    from pderl_jax.envs import make_environment
    from pderl_jax.training import Trainer

    from timing import time_generations

    config = load_config(TASK, {"mode": "td3", "learner.warmup_frames": WARMUP})
    assert config.preset == "td3-2018"
    env = make_environment(TASK, "native")
    figures, _, _ = time_generations(Trainer(config, env), generations, seed)
    return figures


def time_torch(generations: int, seed: int = 0, threads: int | None = None) -> dict:
    """The same TD3 in PyTorch: episode, then as many updates as its steps, then 5 test episodes."""
    import gymnasium as gym
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make(GYM_ID)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]

    def mlp(inputs: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(inputs, 400), nn.ReLU(), nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, outputs))

    actor = nn.Sequential(mlp(obs_dim, act_dim), nn.Tanh())
    critics = nn.ModuleList([mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1)])
    actor_target, critics_target = copy.deepcopy(actor), copy.deepcopy(critics)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    critic_opt = torch.optim.Adam(critics.parameters(), lr=1e-3)

    capacity = 1_000_000
    states = np.zeros((capacity, obs_dim), np.float32)
    actions = np.zeros((capacity, act_dim), np.float32)
    next_states = np.zeros((capacity, obs_dim), np.float32)
    rewards = np.zeros((capacity, 1), np.float32)
    not_done = np.zeros((capacity, 1), np.float32)
    size = 0

    def act(obs) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()

    def update(iteration: int) -> None:
        index = rng.integers(0, size, 100)
        s, a, s2 = (torch.as_tensor(x[index]) for x in (states, actions, next_states))
        r, nd = torch.as_tensor(rewards[index]), torch.as_tensor(not_done[index])
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (actor_target(s2) + noise).clamp(-1.0, 1.0)
            x2 = torch.cat([s2, a2], 1)
            target = r + nd * 0.99 * torch.min(critics_target[0](x2), critics_target[1](x2))
        x = torch.cat([s, a], 1)
        critic_loss = sum(nn.functional.mse_loss(critic(x), target) for critic in critics)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        if iteration % 2 == 0:
            actor_loss = -critics[0](torch.cat([s, actor(s)], 1)).mean()
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            with torch.no_grad():
                for online, target_net in ((actor, actor_target), (critics, critics_target)):
                    for p, tp in zip(online.parameters(), target_net.parameters()):
                        tp.mul_(0.995).add_(0.005 * p)

    def generation() -> int:
        nonlocal size
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        steps, done = 0, False
        while not done:
            if size < WARMUP:
                action = rng.uniform(-1, 1, act_dim).astype(np.float32)
            else:
                action = np.clip(act(obs) + rng.normal(0, 0.1, act_dim), -1, 1).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            i = size % capacity
            states[i], actions[i], next_states[i], rewards[i] = obs, action, next_obs, reward
            not_done[i] = 0.0 if terminated else 1.0  # a time limit is bootstrapped
            size, steps, obs, done = size + 1, steps + 1, next_obs, terminated or truncated
        for iteration in range(steps):
            update(iteration)
        for _ in range(TEST_EPISODES):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(act(obs))
                done = terminated or truncated
        return steps

    generation()  # untimed, as ours
    frames, start = 0, time.perf_counter()
    for _ in range(generations):
        frames += generation()
    wall = time.perf_counter() - start
    return {"seconds_per_generation": wall / generations, "frames_per_generation": frames / generations,
            "frames_per_s": frames / wall, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=15, help="timed rows (1,000 frames each) per learner")
    parser.add_argument("--torch-threads", default="1,2",
                        help="PyTorch intra-op thread counts to try; the fastest is compared (default 1,2)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "td3_speed_halfcheetah.json")
    args = parser.parse_args(argv)
    import jax

    from pderl_jax.experiments.compare import device_description

    ours = time_ours(args.generations)
    tried = [time_torch(args.generations, threads=int(n)) for n in args.torch_threads.split(",")]
    torch_figures = max(tried, key=lambda figures: figures["frames_per_s"])
    result = {
        "task": GYM_ID, "backend": "native", "preset": "td3-2018", "timed_generations": args.generations,
        "device": device_description(), "jax": jax.__version__,
        "pderl_jax": ours, "pytorch": torch_figures, "pytorch_tried": tried,
        "speedup": ours["frames_per_s"] / torch_figures["frames_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = ["| learner | frames/s | s per 1,000-frame row | compile |", "|---|---|---|---|",
             f"| pderl-jax `--mode td3` (jax {jax.__version__}) | {ours['frames_per_s']:.1f} | "
             f"{ours['seconds_per_generation']:.2f} | {ours['compile_s']:.1f} s |",
             *(f"| PyTorch TD3, same settings (torch {t['torch']}, {t['torch_threads']} thread"
               f"{'s' if t['torch_threads'] > 1 else ''}) | {t['frames_per_s']:.1f} | {t['seconds_per_generation']:.2f} | - |"
               for t in tried),
             "", f"ratio against the faster PyTorch: {result['speedup']:.2f}x ({result['device']})"]
    text = "\n".join(table)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
