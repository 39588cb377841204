"""Evaluate finished runs again, on many more start states than the training-time evaluation used.

The online loop evaluates on ``eval_episodes`` start states (env j reset with seed 10_000 + j; five in the
CPU-sized runs of notebook 08), the same at every evaluation and for every algorithm. Five start states
are a small, fixed sample of an environment's tasks: on Reacher each start state fixes where the goal is.
This script loads the final batch checkpoint of each run (:func:`rfm_teach.train.train_seeds` writes it to
``<out>/checkpoints/seeds_<s0>_..._.pt``) and runs :func:`rfm_teach.train.evaluate` on ``--episodes``
start states, j = 0 .. E - 1: the first ``eval_episodes`` are the training-time evaluation's own, the rest
are new. Both protocols, "argmax" (best of N particles by Q; SAC's tanh(mean)) and "raw" (one policy
sample), each with its own generator per seed (seed 7919 s + 1_000_003 and + 1_000_004).

Writes ``<out-root>/<run-id>/returns.csv`` (run, seed, mode, start, return; one row per episode) and a
manifest that names, for each run, the command and commit that trained it. The runs' logs are not copied:
store them as runs of their own (their manifests are written by the training command).

Usage::

    rfm-teach train --env Reacher-v5 --preset tiny --steps 10000 --eval-every 1000 --eval-episodes 5 \\
        --seeds 0 1 2 3 4 --no-progress --algo rfm --temperature-mode reward_scale --out /tmp/envs/reacher/rfm
    rfm-teach train ... --algo sac --out /tmp/envs/reacher/sac
    python benchmarks/reeval.py --runs /tmp/envs/reacher/rfm /tmp/envs/reacher/sac --episodes 100 \\
        --run-id reacher_e100 --out-root /tmp/reeval
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rfm_teach.agent import Agent
from rfm_teach.results import MANIFEST, write_manifest
from rfm_teach.train import TrainConfig, _make, batch_checkpoint, evaluate

MODES = ("argmax", "raw")
SEED_OFFSET = {"argmax": 1_000_003, "raw": 1_000_004}


def reevaluate(run: Path, episodes: int) -> tuple[dict, list[dict]]:
    """The final checkpoint of the batch run in ``run`` on ``episodes`` start states, both protocols.

    Returns (source, rows): the run's provenance (its seeds' manifest command and commit, the step of
    the checkpoint) and one row per (seed, mode, start state) with the episode's undiscounted return.
    """
    seed_dirs = sorted(run.glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
    if not seed_dirs:
        raise ValueError(f"{str(run)!r} has no seed_<s> directories: pass the --out of a `rfm-teach train` run")
    seeds = [int(p.name.split("_")[1]) for p in seed_dirs]
    ckpt = batch_checkpoint(run, seeds)
    if not ckpt.exists():
        raise ValueError(f"no batch checkpoint at {str(ckpt)!r}: the run must have finished with --seeds {seeds}")
    state = torch.load(ckpt, weights_only=False)  # our own file
    config = TrainConfig.from_dict(state["config"])
    if state["step"] != config.total_steps:
        raise ValueError(f"{str(ckpt)!r} is at step {state['step']}, not the run's end ({config.total_steps})")
    probe = _make(config, None)
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    agent = Agent(obs_dim, act_dim, config.agent, device="cpu", seed=seeds)
    agent.load_state_dict(state["agent"])
    manifest = json.loads((seed_dirs[0] / MANIFEST).read_text())
    source = {"run": run.name, "env_id": config.env_id, "algo": config.agent.algo, "step": state["step"],
              "train_eval_episodes": config.eval_episodes, "command": manifest["command"],
              "commit": manifest["git"]["commit"], "dirty": manifest["git"]["dirty"]}
    rows = []
    for mode in MODES:
        envs = [[_make(config, None) for _ in range(episodes)] for _ in seeds]
        returns, _ = evaluate(agent, envs, mode, seed=[7919 * s + SEED_OFFSET[mode] for s in seeds])
        for s, per_seed in zip(seeds, returns):
            rows += [{"run": run.name, "seed": s, "mode": mode, "start": j, "return": r} for j, r in enumerate(per_seed)]
    return source, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="the --out directories of finished `rfm-teach train` runs")
    p.add_argument("--episodes", type=int, default=100, help="start states per seed (default 100)")
    p.add_argument("--run-id", required=True)
    p.add_argument("--out-root", default="/tmp/reeval")
    args = p.parse_args()
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1; got {args.episodes}")
    torch.set_num_threads(1)
    out = Path(args.out_root) / args.run_id
    out.mkdir(parents=True, exist_ok=True)
    t0, sources, rows = time.perf_counter(), [], []
    for run in tqdm([Path(r) for r in args.runs], desc="runs"):
        source, run_rows = reevaluate(run, args.episodes)
        sources.append(source)
        rows += run_rows
    with open(out / "returns.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "seed", "mode", "start", "return"])
        writer.writeheader()
        writer.writerows(rows)
    seeds = sorted({r["seed"] for r in rows})
    write_manifest(out, command="python benchmarks/reeval.py " + " ".join(sys.argv[1:]), seeds=seeds,
                   wall_time_s=time.perf_counter() - t0, device="cpu",
                   extra={"experiment": "reeval", "episodes": args.episodes, "modes": list(MODES),
                          "start_states": "env j reset with seed 10_000 + j, j < episodes; the runs' own "
                                          "training-time evaluation used j < train_eval_episodes",
                          "sources": sources})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
