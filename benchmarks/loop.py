"""Env-steps per second of the full online loop: RFM update vs SAC update, same machine, same run.

Each algorithm runs the loop's body (the same calls as :func:`rfm_teach.train.train`, without
evaluation or logging): after an untimed random warm-up, every step is act (particles + Boltzmann
choice for RFM, a Gaussian sample for SAC) + env step + store + one update. The printed ratio is
measured within one run, so it depends less on what else the machine is doing than absolute numbers.

Usage::

    python benchmarks/loop.py                                  # HalfCheetah-v5, paper networks, cuda if present
    python benchmarks/loop.py --env rfm_teach/ContextualBandit-v0 --preset tiny --steps 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rfm_teach.agent import Agent
from rfm_teach.envs import make_env
from rfm_teach.train import ReplayBuffer, make_config, resolve_device


def steps_per_second(algo: str, env_id: str, preset: str, steps: int, warmup: int, device: str) -> float:
    """Env steps per second of act + env step + store + one update, after ``warmup`` random steps (untimed)."""
    config = make_config(preset, env_id=env_id, warmup_steps=warmup, device=device, agent={"algo": algo})
    env = make_env(env_id, seed=0)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    dev = resolve_device(device)
    agent = Agent(obs_dim, act_dim, config.agent, device=dev, seed=0)
    buffer = ReplayBuffer(obs_dim, act_dim, config.buffer_size, 0, dev)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)

    def env_step(action: np.ndarray) -> None:
        nonlocal obs
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, 0.0 if terminated else 1.0)
        obs = env.reset()[0] if terminated or truncated else next_obs

    for _ in range(warmup):
        env_step(rng.uniform(-1, 1, act_dim).astype(np.float32))
    agent.update(buffer.sample(config.batch_size))  # first call pays one-off allocation costs
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        action = agent.act(torch.as_tensor(obs[None], dtype=torch.float32), agent.behaviour_mode)[0].cpu().numpy()
        env_step(action)
        agent.update(buffer.sample(config.batch_size))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    env.close()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--steps", type=int, default=20, help="updating steps timed per algorithm")
    parser.add_argument("--warmup", type=int, default=256, help="random steps before updates (>= batch size)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"env {args.env}, preset {args.preset}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.steps} updating steps after {args.warmup} warm-up steps")
    rates = {}
    for algo in ("sac", "rfm"):
        rates[algo] = steps_per_second(algo, args.env, args.preset, args.steps, args.warmup, str(device))
        print(f"{algo:>4}: {rates[algo]:8.2f} env-steps/s  ({1000 / rates[algo]:7.1f} ms per step)")
    print(f"ratio sac/rfm: {rates['sac'] / rates['rfm']:.1f}x (one RFM step costs this many SAC steps)")


if __name__ == "__main__":
    main()
