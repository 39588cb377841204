"""Env-steps per second of the full online loop, RFM vs SAC, and one RFM update broken into its parts.

Each algorithm runs the loop's body (the same calls as :func:`rfm_teach.train.train`, without
evaluation or logging): after an untimed random warm-up, every step is act (particles + Boltzmann
choice for RFM, a Gaussian sample for SAC) + env step + store + one update. The printed ratio is
measured within one run, so it depends less on what else the machine is doing than absolute numbers.

``--parts`` then times the pieces of one RFM update on the same batches (mean ms over ``--steps``):
particle sampling (the M particles at s and, where a transition bootstraps, at s', in one ODE solve),
the particle choice (critic on M actions + Boltzmann draw, s and s' together), the target value at s',
the critic step, the estimator (:func:`rfm_teach.estimators.posterior_mean`) and the actor step (loss,
backward, Adam) without its estimator.

``--baseline COMMIT`` runs this benchmark as it was at COMMIT (extracted with ``git archive`` into a
temporary directory, in a subprocess on the same machine, right after this run's own numbers), so
the before/after ratio comes from one run.

Usage::

    python benchmarks/loop.py                                  # HalfCheetah-v5, paper networks, cuda if present
    python benchmarks/loop.py --env rfm_teach/ContextualBandit-v0 --preset tiny --steps 100 --threads 1 \\
        --parts --baseline dea79b6
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rfm_teach.agent import Agent
from rfm_teach.envs import make_env
from rfm_teach.train import ReplayBuffer, make_config, resolve_device


def _setup(algo: str, env_id: str, preset: str, warmup: int, device: str, agent_overrides: dict):
    config = make_config(preset, env_id=env_id, warmup_steps=warmup, device=device, agent={"algo": algo, **agent_overrides})
    env = make_env(env_id, seed=0)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    dev = resolve_device(device)
    agent = Agent(obs_dim, act_dim, config.agent, device=dev, seed=0)
    buffer = ReplayBuffer(obs_dim, act_dim, config.buffer_size, 0, dev)
    return config, env, dev, agent, buffer


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def steps_per_second(algo: str, env_id: str, preset: str, steps: int, warmup: int, device: str,
                     agent_overrides: dict | None = None) -> float:
    """Env steps per second of act + env step + store + one update, after ``warmup`` random steps (untimed)."""
    config, env, dev, agent, buffer = _setup(algo, env_id, preset, warmup, device, agent_overrides or {})
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)

    def env_step(action: np.ndarray) -> None:
        nonlocal obs
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, 0.0 if terminated else 1.0)
        obs = env.reset()[0] if terminated or truncated else next_obs

    for _ in range(warmup):
        env_step(rng.uniform(-1, 1, env.action_space.shape[0]).astype(np.float32))
    agent.update(buffer.sample(config.batch_size))  # first call pays one-off allocation costs
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        action = agent.act(torch.as_tensor(obs[None], dtype=torch.float32), agent.behaviour_mode)[0].cpu().numpy()
        env_step(action)
        agent.update(buffer.sample(config.batch_size))
    _sync(dev)
    env.close()
    return steps / (time.perf_counter() - start)


def update_parts(env_id: str, preset: str, steps: int, warmup: int, device: str, agent_overrides: dict) -> dict[str, float]:
    """Mean milliseconds of each part of one flow-family update (see the module docstring)."""
    from rfm_teach.estimators import posterior_mean
    from rfm_teach.targets import Boltzmann

    config, env, dev, agent, buffer = _setup("rfm", env_id, preset, warmup, device, agent_overrides)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(warmup):
        a = rng.uniform(-1, 1, env.action_space.shape[0]).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(a)
        buffer.add(obs, a, float(reward), next_obs, 0.0 if terminated else 1.0)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    cfg, gen = agent.config, agent.generator
    times: dict[str, float] = {}

    def timed(name: str, fn):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        times[name] = times.get(name, 0.0) + 1000 * (time.perf_counter() - t0)
        return out

    agent.update(buffer.sample(config.batch_size))
    for _ in range(steps):
        batch = buffer.sample(config.batch_size)
        s = batch["obs"]
        with torch.no_grad():  # the branches of Agent._endpoints_and_next_value with n = M, timed one by one
            if agent._bootstraps(batch):
                both = agent._seed_cat(s, batch["next_obs"])
                latents = timed("particles at s and s' (one ODE solve)", lambda: agent._latents(both, cfg.particles, gen))
                picks = timed("particle choice at s and s' (Q on M + draw)",
                              lambda: agent._pick(both, latents, "boltzmann", gen))
                particles, _ = agent._seed_split(latents)
                u1, u_next = agent._seed_split(picks)
                next_value = timed("target value at s'", lambda: agent.critic_target.q_min(batch["next_obs"], torch.tanh(u_next)))
            else:  # all terminal (the bandit): no s' solve
                particles = timed("particles at s (ODE solve)", lambda: agent._latents(s, cfg.particles, gen))
                u1 = timed("particle choice at s (Q on M + draw)", lambda: agent._pick(s, particles, "boltzmann", gen))
                next_value = None
        timed("critic step", lambda: agent._critic_update(batch, next_value))

        def q(a):
            return agent.q_value(s[:, None, :].expand(-1, a.shape[1], -1), a)

        target = Boltzmann(q, agent.temperature, squash=True, check=False)
        policy = agent.actor
        t = policy.t_min + (1 - 2 * policy.t_min) * torch.rand(s.shape[0], generator=gen, device=dev)
        u_t = policy.path.interpolate(u1, torch.randn(u1.shape, generator=gen, device=dev), t[:, None])
        prior = particles if cfg.proposal == "policy" else None
        timed("estimator (posterior_mean)", lambda: posterior_mean(
            target, u_t, t, path=policy.path, K=cfg.K, cv=cfg.cv, generator=gen, prior_samples=prior, check=False))
        timed("whole update", lambda: agent.update(batch, sync=False))
    parts = {k: v / steps for k, v in times.items()}
    named = sum(v for k, v in parts.items() if k != "whole update")
    # The actor step is what the whole update spends beyond the named parts (it includes its own estimator call).
    parts["actor step without estimator"] = parts["whole update"] - named
    return parts


def _baseline(commit: str, argv: list[str]) -> None:
    """Run benchmarks/loop.py as it was at ``commit`` in a subprocess, from a ``git archive`` extract."""
    repo = Path(__file__).resolve().parents[1]
    data = subprocess.run(["git", "archive", commit], cwd=repo, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": tmp}
        print(f"--- baseline: benchmarks/loop.py at {commit} ---", flush=True)
        subprocess.run([sys.executable, str(Path(tmp) / "benchmarks" / "loop.py"), *argv], env=env, check=True, cwd=tmp)


def _store(args: argparse.Namespace) -> None:
    """Rerun this command without --out in a subprocess, keep its output as OUT/loop.txt and write a manifest."""
    from rfm_teach.results import git_state, write_manifest

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--out")
    del argv[i:i + 2]
    at_start, t0 = git_state(exclude=out), time.perf_counter()
    text = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True).stdout
    (out / "loop.txt").write_text(text)
    print(text, end="")
    write_manifest(out, command="python benchmarks/loop.py " + " ".join(sys.argv[1:]), seeds=[0],
                   wall_time_s=time.perf_counter() - t0, device=str(resolve_device(args.device)),
                   extra={"git_at_start": at_start, "env_id": args.env, "preset": args.preset, "steps": args.steps})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--steps", type=int, default=20, help="updating steps timed per algorithm")
    parser.add_argument("--warmup", type=int, default=256, help="random steps before updates (>= batch size)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--parts", action="store_true", help="also time the parts of one RFM update")
    parser.add_argument("--out", default=None, help="also store the printed table as OUT/loop.txt with a manifest")
    parser.add_argument("--baseline", default=None, metavar="COMMIT",
                        help="afterwards run this benchmark as it was at COMMIT (same flags, without --parts)")
    args = parser.parse_args()
    if args.out is not None:
        _store(args)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"env {args.env}, preset {args.preset}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.steps} updating steps after {args.warmup} warm-up steps")
    rates = {}
    variants = {"sac": ("sac", {}), "rfm": ("rfm", {}), "rfm kernel": ("rfm", {"proposal": "kernel"})}
    for name, (algo, overrides) in variants.items():
        rates[name] = steps_per_second(algo, args.env, args.preset, args.steps, args.warmup, str(device), overrides)
        print(f"{name:>10}: {rates[name]:8.2f} env-steps/s  ({1000 / rates[name]:7.1f} ms per step)")
    for name in ("rfm", "rfm kernel"):
        print(f"ratio sac/{name}: {rates['sac'] / rates[name]:.1f}x (one {name} step costs this many SAC steps)")
    if args.parts:
        for name, overrides in (("rfm", {}), ("rfm kernel", {"proposal": "kernel"})):
            parts = update_parts(args.env, args.preset, args.steps, args.warmup, str(device), overrides)
            print(f"parts of one {name} update (ms):")
            for part, ms in parts.items():
                print(f"  {part:<34} {ms:8.2f}")
    if args.baseline:
        argv = ["--env", args.env, "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--device", args.device] + ([] if args.threads is None else ["--threads", str(args.threads)])
        _baseline(args.baseline, argv)


if __name__ == "__main__":
    main()
