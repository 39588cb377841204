"""Env-steps per second of the full online loop: RFM update vs SAC update, same machine, same run.

Each algorithm runs the real loop (:func:`rfm_teach.train.train`): a short warm-up, then act + env step +
one update per step, with evaluation switched off (``eval_every`` beyond the run). The printed ratio
SAC / RFM is measured within this run, so it does not depend on what else the machine does between runs
as much as absolute numbers do.

Usage::

    python benchmarks/loop.py                                  # HalfCheetah-v5, paper networks, cuda if present
    python benchmarks/loop.py --env rfm_teach/ContextualBandit-v0 --preset tiny --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rfm_teach.train import make_config, resolve_device, train


def steps_per_second(algo: str, env_id: str, preset: str, steps: int, warmup: int, device: str) -> float:
    """Env steps per second over the ``steps`` updating steps (warm-up timed separately and subtracted)."""
    common = dict(env_id=env_id, warmup_steps=warmup, eval_every=10**9, eval_episodes=1, checkpoint_every=None,
                  device=device, agent={"algo": algo})
    with tempfile.TemporaryDirectory() as tmp:
        warm = make_config(preset, total_steps=warmup, **common)
        full = make_config(preset, total_steps=warmup + steps, **common)
        start = time.perf_counter()
        train(warm, Path(tmp) / "warm", progress=False)
        t_warm = time.perf_counter() - start
        start = time.perf_counter()
        train(full, Path(tmp) / "full", progress=False)
        t_full = time.perf_counter() - start
    return steps / max(t_full - t_warm, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--steps", type=int, default=100, help="updating steps timed per algorithm")
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
    print(f"ratio sac/rfm: {rates['sac'] / rates['rfm']:.1f}x (RFM's update costs this many SAC updates)")


if __name__ == "__main__":
    main()
