"""Can the actor fit its target once the critic stops moving? Refit a trained actor on its frozen critic.

:mod:`actor_fit` measures a finished run's actor against the exact Boltzmann policy of its own critic,
pi(a|s) ∝ exp(Q(s, a) / lambda), and finds it far off. Online, three things could hold it there: the critic
moves every update and the actor takes one step behind it; the regression target is poor because the
proposal is built from the actor's own, off-target particles (a feedback loop); or the network and optimiser
cannot fit the target. This script separates them. It loads the final checkpoint (:func:`reeval.load_agent`),
freezes the critic, takes ``--pool`` states from the last 1000 transitions of each seed's replay buffer, and
trains the actor alone on those states, from the checkpoint's weights and optimiser state, with the agent's
own actor update (:meth:`rfm_teach.agent.Agent.actor_update`: its estimator, K, c, batch size, learning rate,
gradient clip; endpoints u1 from a Boltzmann pick among M policy particles, as online), in two arms that
differ only in the M particles the proposal is built from:

- **actor**: the policy's own particles, as online;
- **exact**: as many exact samples of the frozen critic's Boltzmann policy at each state (drawn from a bank of
  ``--bank`` samples per state on the ``--grid`` grid over the action box, mapped to u = atanh(a)). With
  these the estimate is close to exact (:mod:`actor_fit`'s regression-target measurement).

At each update count in ``--measure`` it measures the fit at ``--fit-states`` of the pool states of each seed
(evenly spread over the pool) with :func:`actor_fit.fit_rows` (sliced W2 and TV beside the floor of as many
exact samples, spread, mean shift, the value given up in lambda units).

Read together: "exact" reaching the floor while "actor" stays off says the actor's own particles hold it
back; both reaching it says that online it is the moving critic; neither says the network, the optimiser
or the estimator itself. A pool of 64 states per seed is an easier problem than the whole buffer: the
actor arm needs no exact samples, so ``--arms actor --pool 1000`` trains on every one of the last 1000
transitions and measures the fit at the same kind of states; ``--actor-lr`` replaces the run's learning rate.
``--fresh-hidden H`` asks whether the network's width is what caps that fit: it trains a new actor of width H
(initialised as a fresh run's, with a fresh optimiser; the run's other settings) from scratch on the same
frozen critic, so that runs with different H differ only in the width. ``--batch`` (states per seed and update)
and ``--K`` (importance draws per estimate) replace the run's, to ask whether the noise of each update is what
holds the fit: the first averages the gradient over more states, the second makes each regression target less noisy.

Writes ``<out-root>/<run-id>/refit.csv`` (one row per arm, update count and state) and a manifest naming the
source run's command and commit.

Usage::

    python benchmarks/actor_refit.py --run /tmp/envs/reacher/rfm --run-id reacher_refit_rfm
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rfm_teach.agent import Agent
from rfm_teach.results import write_manifest
from rfm_teach.seeds import SeedGenerators

sys.path.insert(0, str(Path(__file__).resolve().parent))
from actor_fit import FIT_COLUMNS, exact_policy, fit_rows, seed_critics, temperatures  # noqa: E402
from reeval import _finished, load_agent  # noqa: E402

ARMS = ("actor", "exact")
RECENT = 1000  # the pool is spread over this many most recent transitions
REFIT_OFFSET = 1_000_011
COLUMNS = ["run", "arm", "update", "seed", "state"] + FIT_COLUMNS[4:]
EDGE = 1 - 1e-6  # exact samples on the box's walls are moved this far in before atanh


def recent_states(buffers: list[dict], pool: int) -> Tensor:
    """``pool`` observations per seed, evenly spread over the last RECENT transitions of each buffer. (S, P, ds)."""
    out = []
    for buffer in buffers:
        size = int(buffer["size"])
        if size < pool:
            raise ValueError(f"the replay buffer holds {size} transitions; --pool {pool} needs at least as many")
        newest = torch.as_tensor(buffer["obs"][max(0, size - RECENT):size])
        out.append(newest[torch.linspace(0, len(newest) - 1, pool).round().long()])
    return torch.stack(out).float()


def exact_bank(agent: Agent, states: Tensor, *, n: int, size: int, seeds: list[int]) -> Tensor:
    """``size`` exact latent samples u = atanh(a) of each seed's frozen Boltzmann policy at each state (S, P, ds),
    a from the policy on an n^d grid over the action box. (S * P, size, d), seed-major."""
    gens = SeedGenerators([7919 * s + REFIT_OFFSET + 2 for s in seeds])
    bank = [torch.atanh(exact_policy(critic, obs, lam, n).sample(size, gen).clamp(-EDGE, EDGE)).float()
            for critic, lam, gen, seed_states in zip(seed_critics(agent), temperatures(agent), gens, states)
            for obs in seed_states]
    return torch.stack(bank)


def fresh_actor(agent: Agent, hidden: int, seeds: list[int]) -> Agent:
    """An agent with ``agent``'s settings but an actor of width ``hidden``, initialised as a fresh run with
    ``seeds`` would be (its optimiser fresh too), holding ``agent``'s critic, target critic and temperatures."""
    fresh = Agent(agent.obs_dim, agent.act_dim, replace(agent.config, hidden=hidden), device="cpu", seed=seeds)
    fresh.critic.load_state_dict(agent.critic.state_dict())
    fresh.critic_target.load_state_dict(agent.critic_target.state_dict())
    fresh.temperatures = list(agent.temperatures)
    return fresh


def refit(agent: Agent, states: Tensor, arm: str, *, batch: int, measure: tuple[int, ...], fit_states: int,
          samples: int, n: int, bins: int, seeds: list[int], bank: Tensor | None = None) -> list[dict]:
    """Train ``agent``'s actor alone on ``states`` (S, P, ds), ``batch`` states per seed and update, up to the
    largest count in ``measure``; the fit at ``fit_states`` states of each seed, evenly spread over the pool, at
    each count (0: the checkpoint's actor). ``bank``: the exact arm's :func:`exact_bank`."""
    S, P, ds = states.shape
    M = agent.config.particles
    agent.generator = gens = SeedGenerators([7919 * s + REFIT_OFFSET for s in seeds])
    flat, offsets = states.reshape(S * P, ds), (torch.arange(S) * P)[:, None]
    measured = torch.linspace(0, P - 1, fit_states).round().long()  # spread over the pool, as the pool over the buffer
    rows, done = [], 0
    for count in tqdm(sorted(set(measure)), desc=arm, leave=False):
        for _ in range(count - done):
            index = (torch.stack([torch.randint(P, (batch,), generator=g) for g in gens]) + offsets).reshape(-1)
            obs = flat[index]
            with torch.no_grad():
                particles = agent._latents(obs, M, gens)
                u1 = agent._pick(obs, particles, "boltzmann", gens)
                if bank is not None:
                    pick = torch.cat([torch.randint(bank.shape[1], (batch, M), generator=g) for g in gens])
                    particles = bank[index[:, None], pick]
            agent.actor_update(obs, particles, u1)
        done = count
        fit_gens = SeedGenerators([7919 * s + REFIT_OFFSET + 1 for s in seeds])  # the same exact samples each time
        fit = fit_rows(agent, states[:, measured], samples=samples, n=n, bins=bins, gens=fit_gens)
        rows += [{**row, "arm": arm, "update": count, "seed": seeds[row["seed"]],
                  "state": int(measured[i % fit_states])} for i, row in enumerate(fit)]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the --out directory of a finished flow-family `rfm-teach train` run")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--pool", type=int, default=64, help="states per seed the actor is refitted on (default 64)")
    p.add_argument("--measure", type=int, nargs="+", default=[0, 250, 500, 1000, 2000, 3000],
                   help="update counts at which to measure the fit (default 0 250 500 1000 2000 3000)")
    p.add_argument("--fit-states", type=int, default=16,
                   help="pool states per seed the fit is measured at, evenly spread (default 16)")
    p.add_argument("--actor-lr", type=float, default=None,
                   help="the actor's Adam learning rate for the refit (default: the run's own)")
    p.add_argument("--fresh-hidden", type=int, default=None,
                   help="train a new actor of this width from scratch instead of the checkpoint's (default: off)")
    p.add_argument("--batch", type=int, default=None, help="states per seed and update (default: the run's batch size)")
    p.add_argument("--K", type=int, default=None, help="importance draws per estimate (default: the run's K)")
    p.add_argument("--bank", type=int, default=1024, help="exact samples per state for the exact arm (default 1024)")
    p.add_argument("--samples", type=int, default=512, help="policy and exact samples per state (default 512)")
    p.add_argument("--grid", type=int, default=129, help="grid points per action axis for the fit (default 129)")
    p.add_argument("--bins", type=int, default=16, help="TV histogram bins per axis (default 16)")
    p.add_argument("--run-id", required=True)
    p.add_argument("--out-root", default="/tmp/reeval")
    args = p.parse_args()
    if min(args.measure) < 0 or not 1 <= args.fit_states <= args.pool or min(args.samples, args.bins, args.bank) < 1:
        raise SystemExit(f"need --measure >= 0, 1 <= --fit-states <= --pool, --samples, --bins and --bank >= 1; got "
                         f"{args.measure}, {args.fit_states}, {args.pool}, {args.samples}, {args.bins}, {args.bank}")
    if args.grid < 3 or not (args.actor_lr is None or args.actor_lr > 0) \
            or any(v is not None and v < 1 for v in (args.fresh_hidden, args.batch, args.K)):
        raise SystemExit(f"--grid must be >= 3, --actor-lr > 0 and --fresh-hidden, --batch and --K >= 1; got "
                         f"{args.grid}, {args.actor_lr}, {args.fresh_hidden}, {args.batch}, {args.K}")
    torch.set_num_threads(1)
    run = Path(args.run)
    t0, rows = time.perf_counter(), []
    states = recent_states(_finished(run)[1]["buffers"], args.pool)  # the same pool for every arm
    for arm in args.arms:
        seeds, agent, config, source = load_agent(run)  # each arm starts from the checkpoint
        if config.agent.algo != "rfm" or agent.act_dim > 2:
            raise SystemExit(f"{str(run)!r}: the refit is for flow-family runs (algo 'rfm') with 1 or 2 action "
                             f"dimensions; got algo {config.agent.algo!r}, {agent.act_dim} dimensions")
        if args.fresh_hidden is not None:
            agent = fresh_actor(agent, args.fresh_hidden, seeds)
        if args.K is not None:
            agent.config = replace(agent.config, K=args.K)
        batch = args.batch or config.batch_size
        if args.actor_lr is not None:
            for group in agent.actor_optim.param_groups:
                group["lr"] = args.actor_lr
        bank = exact_bank(agent, states, n=args.grid, size=args.bank, seeds=seeds) if arm == "exact" else None
        rows += refit(agent, states, arm, batch=batch, measure=tuple(args.measure),
                      fit_states=args.fit_states, samples=args.samples, n=args.grid, bins=args.bins, seeds=seeds,
                      bank=bank)
    for row in rows:
        row["run"] = run.name
    out = Path(args.out_root) / args.run_id
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "refit.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_manifest(out, command="python benchmarks/actor_refit.py " + " ".join(sys.argv[1:]), seeds=seeds,
                   wall_time_s=time.perf_counter() - t0, device="cpu",
                   extra={"experiment": "actor_refit", "arms": args.arms, "pool": args.pool, "recent": RECENT,
                          "measure": sorted(set(args.measure)), "fit_states": args.fit_states,
                          "samples": args.samples, "grid": args.grid, "bins": args.bins,
                          "bank": args.bank, "batch": batch, "K": agent.config.K,
                          "actor_lr": agent.actor_optim.param_groups[0]["lr"], "fresh_hidden": args.fresh_hidden,
                          "source": source})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
