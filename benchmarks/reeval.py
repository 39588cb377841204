"""Evaluate finished runs again, on many more start states than the training-time evaluation used.

The online loop evaluates on ``eval_episodes`` start states (env j reset with seed 10_000 + j; five in the
CPU-sized runs of notebook 08), the same at every evaluation and for every algorithm. Five start states
are a small, fixed sample of an environment's tasks: on Reacher each start state fixes where the goal is.
This script loads the final checkpoint of each run (:func:`rfm_teach.cli.train_checkpoint` says where
``rfm-teach train`` writes it) and runs :func:`rfm_teach.train.evaluate` on ``--episodes``
start states, j = 0 .. E - 1: the first ``eval_episodes`` are the training-time evaluation's own, the rest
are new. Both protocols, "argmax" (best of N particles by Q; SAC's tanh(mean)) and "raw" (one policy
sample), each with its own generator per seed (seed 7919 s + 1_000_003 and + 1_000_004). ``--info-keys``
also sums named per-step terms of the environment's ``info`` over each episode: on Reacher the return is
``reward_dist`` (minus the distance of the fingertip to the target) plus ``reward_ctrl`` (minus the squared
action), so the two sums tell an arm that does not reach from one that pays for its moves.

``--critics-from DIR`` swaps in another finished run's critics (same seeds, same critic width) before
evaluating: the selected action ("argmax", best of N particles by Q) then picks among this run's particles
by the other run's Q, which tells a critic that ranks the particles badly from particles that hold no good
action. The raw sample draws no critic call, so it is unchanged by the swap (a check). The rows are
labelled ``<run>+critics_<other run>``.

Writes ``<out-root>/<run-id>/returns.csv`` (run, seed, mode, start, return, then one column per info key; one
row per episode) and a
manifest that names, for each run, the command and commit that trained it. The runs' logs are not copied:
store them as runs of their own (their manifests are written by the training command).

Usage::

    rfm-teach train --env Reacher-v5 --preset tiny --steps 10000 --eval-every 1000 --eval-episodes 5 \\
        --seeds 0 1 2 3 4 --no-progress --algo rfm --temperature-mode reward_scale --out /tmp/envs/reacher/rfm
    rfm-teach train ... --algo sac --out /tmp/envs/reacher/sac
    python benchmarks/reeval.py --runs /tmp/envs/reacher/rfm /tmp/envs/reacher/sac --episodes 100 \\
        --info-keys reward_dist reward_ctrl --run-id reacher_e100 --out-root /tmp/reeval
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from rfm_teach.agent import Agent
from rfm_teach.cli import train_checkpoint
from rfm_teach.results import MANIFEST, write_manifest
from rfm_teach.train import TrainConfig, _make, evaluate

MODES = ("argmax", "raw")
SEED_OFFSET = {"argmax": 1_000_003, "raw": 1_000_004}


class InfoTotals(gym.Wrapper):
    """Sums the named entries of ``info`` over the current episode (``totals``, reset with the env)."""

    def __init__(self, env: gym.Env, keys: tuple[str, ...]) -> None:
        super().__init__(env)
        self.keys, self.totals = keys, dict.fromkeys(keys, 0.0)

    def reset(self, **kwargs):
        self.totals = dict.fromkeys(self.keys, 0.0)
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        missing = [k for k in self.keys if k not in info]
        if missing:
            raise ValueError(f"info has no {missing}; this env's info keys are {sorted(info)}")
        for k in self.keys:
            self.totals[k] += float(info[k])
        return obs, reward, terminated, truncated, info


def _finished(run: Path) -> tuple[list[int], dict, TrainConfig, dict]:
    """A finished run's seeds, final checkpoint, config and provenance (command and commit)."""
    seed_dirs = sorted(run.glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
    if not seed_dirs:
        raise ValueError(f"{str(run)!r} has no seed_<s> directories: pass the --out of a `rfm-teach train` run")
    seeds = [int(p.name.split("_")[1]) for p in seed_dirs]
    ckpt = train_checkpoint(run, seeds)
    if not ckpt.exists():
        raise ValueError(f"no checkpoint at {str(ckpt)!r}: the run must have finished with --seeds {' '.join(map(str, seeds))}")
    state = torch.load(ckpt, weights_only=False)  # our own file
    config = TrainConfig.from_dict(state["config"])
    if state["step"] != config.total_steps:
        raise ValueError(f"{str(ckpt)!r} is at step {state['step']}, not the run's end ({config.total_steps})")
    manifest = json.loads((seed_dirs[0] / MANIFEST).read_text())
    source = {"run": run.name, "env_id": config.env_id, "algo": config.agent.algo, "step": state["step"],
              "train_eval_episodes": config.eval_episodes, "command": manifest["command"],
              "commit": manifest["git"]["commit"], "dirty": manifest["git"]["dirty"]}
    return seeds, state, config, source


def load_agent(run: Path) -> tuple[list[int], Agent, TrainConfig, dict]:
    """A finished run's seeds, its agent at the final checkpoint (on the CPU), config and provenance."""
    seeds, state, config, source = _finished(run)
    probe = _make(config, None)
    agent = Agent(probe.observation_space.shape[0], probe.action_space.shape[0], config.agent, device="cpu", seed=seeds)
    agent.load_state_dict(state["agent"])
    return seeds, agent, config, source


def reevaluate(run: Path, episodes: int, info_keys: tuple[str, ...] = (),
               critics_from: Path | None = None) -> tuple[dict, list[dict]]:
    """The final checkpoint of the run in ``run`` on ``episodes`` start states, both protocols.

    ``critics_from``: another finished run whose critics replace this run's (same seeds and width).
    Returns (source, rows): the run's provenance (its seeds' manifest command and commit, the step of
    the checkpoint; under "critics_from" the other run's) and one row per (seed, mode, start state) with
    the episode's undiscounted return and the episode's sum of each ``info_keys`` entry.
    """
    seeds, agent, config, source = load_agent(run)
    # one set of envs serves both protocols: evaluate() resets env j with seed 10_000 + j, which also zeroes its totals
    envs = [[InfoTotals(_make(config, None), info_keys) for _ in range(episodes)] for _ in seeds]
    label = run.name
    if critics_from is not None:
        other_seeds, other_state, other_config, source["critics_from"] = _finished(critics_from)
        if other_seeds != seeds or other_config.env_id != config.env_id \
                or other_config.agent.critic_hidden != config.agent.critic_hidden:
            raise ValueError(f"--critics-from {str(critics_from)!r} must be a run of {config.env_id} with seeds {seeds} "
                             f"and critic_hidden {config.agent.critic_hidden}; got {other_config.env_id}, seeds "
                             f"{other_seeds}, critic_hidden {other_config.agent.critic_hidden}")
        agent.critic.load_state_dict(other_state["agent"]["critic"])
        label = f"{run.name}+critics_{critics_from.name}"
    source["label"] = label
    rows = []
    for mode in MODES:
        returns, _ = evaluate(agent, envs, mode, seed=[7919 * s + SEED_OFFSET[mode] for s in seeds])
        for s, per_seed, env_row in zip(seeds, returns, envs):
            rows += [{"run": label, "seed": s, "mode": mode, "start": j, "return": r, **env.totals}
                     for j, (r, env) in enumerate(zip(per_seed, env_row))]
    return source, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="the --out directories of finished `rfm-teach train` runs")
    p.add_argument("--episodes", type=int, default=100, help="start states per seed (default 100)")
    p.add_argument("--info-keys", nargs="*", default=[], help="per-step info entries to sum over each episode")
    p.add_argument("--critics-from", type=Path, default=None,
                   help="a finished run whose critics replace each run's own before evaluating")
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
        source, run_rows = reevaluate(run, args.episodes, tuple(args.info_keys), args.critics_from)
        sources.append(source)
        rows += run_rows
    with open(out / "returns.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "seed", "mode", "start", "return", *args.info_keys])
        writer.writeheader()
        writer.writerows(rows)
    seeds = sorted({r["seed"] for r in rows})
    write_manifest(out, command="python benchmarks/reeval.py " + " ".join(sys.argv[1:]), seeds=seeds,
                   wall_time_s=time.perf_counter() - t0, device="cpu",
                   extra={"experiment": "reeval", "episodes": args.episodes, "modes": list(MODES), "info_keys": args.info_keys,
                          "start_states": "env j reset with seed 10_000 + j, j < episodes; the runs' own "
                                          "training-time evaluation used j < train_eval_episodes",
                          "sources": sources})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
