"""Does a trained actor sample the Boltzmann policy of its own critic? Exact answers on a grid.

The flow family's actor is trained towards pi(a|s) ∝ exp(Q(s, a) / lambda), Q its own critic (the minimum
of the twins) and lambda its temperature; SAC's actor towards the same form with lambda = alpha, its
entropy coefficient, within the tanh-Gaussians. With one or two action dimensions that target has an
exact answer state by state: quadrature on a grid over the action box [-1, 1]^d
(:class:`rfm_teach.targets.ExactGrid`, ``--grid`` points per axis; the edge cells reach h/2 past the
box, which matters only for a target with mass at the walls). This script loads the final checkpoint of
finished ``rfm-teach train`` runs (:func:`reeval.load_agent`) and measures three things (the third on request).

1. **The fit.** On states the raw policy visits (every ``--every``-th state of the raw-sample episodes
   from the first ``--fit-starts`` start states), ``--samples`` raw policy samples a = tanh(u) against
   the exact target: total variation on coarse bins (:func:`rfm_teach.metrics.grid_tv`, ``--bins`` per
   axis) and sliced W2 to a set of exact samples, each beside the floor that as many exact samples score;
   the value the actor gives up in its own critic's eyes, E_pi[Q] - E_actor[Q]; what the temperature
   gives up, max_a Q - E_pi[Q]; and the shift of the mean action, |E_actor[a] - E_pi[a]|.
2. **What the target is worth.** Returns on ``--episodes`` start states (env j reset with seed
   10_000 + j, as in :mod:`reeval` and in training) for four ways of acting: "raw" (one policy sample) and
   "argmax" (the selected action) with the generators :mod:`reeval` uses, so their rows are its rows;
   "target" (one exact sample of the critic's Boltzmann policy) and "greedy" (the critic's maximiser on
   the grid).
3. **The regression target there** (flow family, ``--target-states`` of those states per seed): the agent's
   estimate of E[u1 | u_t] (its own estimator, K, c and proposal) against the exact posterior mean of the target in
   the latent space u = atanh(a) (a grid over [-2.5, 2.5]^d, ``--latent-grid`` points per axis, so |a| <= 0.987),
   at u_t drawn from the exact marginal at each t in ``--times``: bias², variance, the error of one exact posterior
   draw and of the constant guess E[u1] (:func:`rfm_teach.scoring.score_estimates`, latent units), for two sets
   of particles in the proposal: the actor's own and as many exact samples of the target. ``lean`` is the bias
   along the actor's offset from the target, m_actor - m_target, as a fraction of that offset: positive, the
   regression target hands part of the actor's own error back to it; negative, it over-corrects.

Read together: "raw" close to "target" says the actor has learned its target, and what separates the run
from another lies in its critic and lambda; "target" well above "raw" says the actor has not.

Writes ``<out-root>/<run-id>/returns.csv`` (run, seed, mode, start, return), ``fit.csv`` (one row per
state), ``regression_target.csv`` (flow family: one row per state, t and particles) and a manifest naming
each source run's command and commit.

Usage::

    python benchmarks/actor_fit.py --runs /tmp/envs/reacher/rfm /tmp/envs/reacher/sac --episodes 100 \\
        --run-id reacher_fit --out-root /tmp/reeval
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from rfm_teach.agent import Agent, TwinCritic
from rfm_teach.estimators import posterior_mean
from rfm_teach.metrics import grid_tv, sliced_wasserstein
from rfm_teach.results import write_manifest
from rfm_teach.scoring import score_estimates
from rfm_teach.seeds import SeedGenerators, seed_slice
from rfm_teach.targets import Boltzmann, ExactGrid
from rfm_teach.train import _make, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reeval import SEED_OFFSET, load_agent  # noqa: E402

MODES = ("raw", "argmax", "target", "greedy")
GRID_OFFSET = {"target": 1_000_005, "greedy": 1_000_006}
FIT_OFFSET = 1_000_007
TARGET_COLUMNS = ["run", "seed", "start", "step", "t", "particles", "bias2", "variance", "posterior_var",
                  "constant_mse", "lean"]
LATENT_EXTENT = 2.5
FIT_COLUMNS = ["run", "seed", "start", "step", "temperature", "tv", "tv_floor", "sw2", "sw2_floor", "value_gap",
               "temperature_cost", "mean_shift", "target_spread", "actor_spread"]


class Visits(gym.Wrapper):
    """Keeps the observations of the current episode (``states``, restarted by ``reset``)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.states: list = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.states = [obs]
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self.states.append(out[0])
        return out


def seed_critics(agent: Agent) -> list[TwinCritic]:
    """Each seed's twin critic as a module of its own (S = 1), for state-by-state quadrature."""
    state, critics = agent.critic.state_dict(), []
    for s in range(agent.n_seeds):
        critic = TwinCritic(agent.obs_dim, agent.act_dim, agent.config.critic_hidden)
        critic.load_state_dict(seed_slice(state, s))
        critics.append(critic.eval())
    return critics


def temperatures(agent: Agent) -> list[float]:
    """The lambda each seed's actor is trained towards: the temperature, or SAC's alpha."""
    return agent.log_alpha.exp().tolist() if agent.config.algo == "sac" else list(agent.temperatures)


def exact_policy(critic: TwinCritic, obs: Tensor, temperature: float, n: int, *, latent: bool = False) -> ExactGrid:
    """pi(a|s) ∝ exp(min_i Q_i(s, a) / temperature) on an n^d grid over [-1, 1]^d, for one state ``obs`` (ds,);
    with ``latent`` the same policy as a density over u = atanh(a), on [-LATENT_EXTENT, LATENT_EXTENT]^d."""
    def q(a: Tensor) -> Tensor:
        return critic.q_min(obs.expand(*a.shape[:-1], -1), a.float()).double()

    dim = critic.nets[0][0].in_features - obs.shape[-1]
    return ExactGrid(Boltzmann(q, temperature, squash=latent, check=False), extent=LATENT_EXTENT if latent else 1.0,
                     n=n, dim=dim)


def spread(grid: ExactGrid) -> Tensor:
    """sqrt(tr Cov) of the grid's target (the cell masses at the grid points), a scalar tensor."""
    w = torch.softmax(grid.log_p, 0)
    return (w[:, None] * (grid.points - grid.mean()) ** 2).sum().sqrt()


class GridActor:
    """Acts with the exact Boltzmann policy of an agent's own critics, state by state: "target" draws one
    exact sample, "greedy" takes the grid maximiser. Has what :func:`rfm_teach.train.evaluate` uses of an
    :class:`~rfm_teach.agent.Agent` (``batched``, ``device``, ``act``)."""

    def __init__(self, agent: Agent, n: int) -> None:
        self.batched, self.device, self.n = agent.batched, agent.device, n
        self.critics, self.temperatures = seed_critics(agent), temperatures(agent)

    @torch.no_grad()
    def act(self, obs: Tensor, mode: str, generator) -> Tensor:
        """obs (S, E, ds) for a batch of seeds, else (E, ds) -> actions of the same leading shape."""
        rows = obs if self.batched else obs[None]
        gens = generator if self.batched else [generator]
        actions = []
        for critic, lam, gen, seed_rows in zip(self.critics, self.temperatures, gens, rows):
            for row in seed_rows:
                grid = exact_policy(critic, row, lam, self.n)
                a = grid.sample(1, gen)[0] if mode == "target" else grid.points[grid.log_p.argmax()]
                actions.append(a.clamp(-1.0, 1.0).float())
        return torch.stack(actions).reshape(*obs.shape[:-1], -1)


def fit_rows(agent: Agent, states: Tensor, *, samples: int, n: int, bins: int, gens: SeedGenerators) -> list[dict]:
    """The fit of the raw policy to its exact target at each state. ``states`` (S, F, ds) -> S F dicts."""
    S, F, ds = states.shape
    with torch.no_grad():
        actions = torch.tanh(agent._latents(states.reshape(S * F, ds), samples, gens)).reshape(S, F, samples, -1)
    rows = []
    for s, (critic, lam, gen) in enumerate(zip(seed_critics(agent), temperatures(agent), gens)):
        for f in range(F):
            grid = exact_policy(critic, states[s, f], lam, n)
            mine = actions[s, f].double()
            exact, reference = grid.sample(samples, gen), grid.sample(samples, gen)
            q_grid, w = grid.log_p * lam, torch.softmax(grid.log_p, 0)
            with torch.no_grad():
                q_mine = critic.q_min(states[s, f].expand(samples, -1), mine.float()).double()
            rows.append({"seed": s, "temperature": lam,
                         "tv": grid_tv(mine, grid, bins=bins), "tv_floor": grid_tv(exact, grid, bins=bins),
                         "sw2": sliced_wasserstein(mine, reference, generator=gen),
                         "sw2_floor": sliced_wasserstein(exact, reference, generator=gen),
                         "value_gap": float(w @ q_grid - q_mine.mean()),
                         "temperature_cost": float(q_grid.max() - w @ q_grid),
                         "mean_shift": float((mine.mean(0) - grid.mean()).norm()),
                         "target_spread": float(spread(grid)), "actor_spread": float(mine.var(0).sum().sqrt())})
    return rows


def target_rows(agent: Agent, states: Tensor, *, times: tuple[float, ...], n: int, rows: int, reps: int,
                gens: SeedGenerators) -> list[dict]:
    """The agent's regression target against the exact posterior mean at each state (S, F, ds) and t.

    For each state: the exact target in the latent space (grid of n^d points over [-LATENT_EXTENT, LATENT_EXTENT]^d),
    ``rows`` points u_t from its exact marginal, ``reps`` estimates at each with the agent's own estimator settings,
    once with the actor's particles as the proposal's prior samples and once with as many exact samples.
    """
    cfg, path = agent.config, agent.actor.path
    S, F, ds = states.shape
    with torch.no_grad():
        latents = agent._latents(states.reshape(S * F, ds), cfg.particles, gens).reshape(S, F, cfg.particles, -1)
    out = []
    for s, (critic, lam, gen) in enumerate(zip(seed_critics(agent), temperatures(agent), gens)):
        for f in range(F):
            grid = exact_policy(critic, states[s, f], lam, n, latent=True)
            particles = {"actor": latents[s, f].double(), "exact": grid.sample(cfg.particles, gen)}
            offset = particles["actor"].mean(0) - grid.mean()
            for t in times:
                u_t = grid.marginal_sample(rows, t, path, gen)
                mu = grid.posterior_mean(u_t, t, path)
                for name, prior in particles.items():
                    with torch.no_grad():
                        est = posterior_mean(grid.target, u_t.repeat_interleave(reps, 0), t, path=path, K=cfg.K,
                                             cv=cfg.cv, generator=gen, prior_samples=prior.expand(rows * reps, -1, -1),
                                             mixture=cfg.mixture, adaptive=cfg.adaptive_share, check=False).mean
                    est = est.reshape(rows, reps, -1)
                    score = score_estimates(est, u_t, t, grid, path)["x1"]
                    lean = (est.mean(1) - mu) @ offset / offset.pow(2).sum()
                    out.append({"seed": s, "state": f, "t": t, "particles": name, "bias2": score.bias2,
                                "variance": score.variance, "posterior_var": score.posterior_var,
                                "constant_mse": score.constant_mse, "lean": float(lean.mean())})
    return out


def measure(run: Path, *, episodes: int, fit_starts: int, every: int, samples: int, n: int, bins: int,
            target_states: int = 0, times: tuple[float, ...] = (), latent_n: int = 501, rows: int = 10,
            reps: int = 10) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """The measurements for one finished run: (source, return rows, fit rows, regression-target rows; none for
    SAC or with ``target_states=0``)."""
    seeds, agent, config, source = load_agent(run)
    if agent.act_dim > 2:
        raise ValueError(f"{str(run)!r} has {agent.act_dim} action dimensions; quadrature on a grid is for 1 or 2")
    envs = [[Visits(_make(config, None)) for _ in range(episodes)] for _ in seeds]
    grid_actor, returns, states = GridActor(agent, n), [], None
    for mode in MODES:
        offset = SEED_OFFSET.get(mode) or GRID_OFFSET[mode]
        actor = grid_actor if mode in GRID_OFFSET else agent
        per_seed, _ = evaluate(actor, envs, mode, seed=[7919 * s + offset for s in seeds])
        returns += [{"run": run.name, "seed": s, "mode": mode, "start": j, "return": r}
                    for s, seed_returns in zip(seeds, per_seed) for j, r in enumerate(seed_returns)]
        if mode == "raw":  # the states the raw policy visits, the same count for every seed
            visited = [[(j, k, env.states[k]) for j, env in enumerate(row[:fit_starts])
                        for k in range(0, len(env.states) - 1, every)] for row in envs]
            count = min(len(v) for v in visited)
            where = [v[:count] for v in visited]
            states = torch.as_tensor(np.array([[x for *_, x in v] for v in where]), dtype=torch.float32)
    gens = SeedGenerators([7919 * s + FIT_OFFSET for s in seeds])
    fit = fit_rows(agent, states, samples=samples, n=n, bins=bins, gens=gens)
    place = [w for v in where for w in v]  # (start, step, state) of each fit row, seed-major
    for row, (j, k, _) in zip(fit, place):
        row.update(run=run.name, seed=seeds[row["seed"]], start=j, step=k)
    targets = []
    if target_states and config.agent.algo != "sac":
        keep = torch.linspace(0, count - 1, min(target_states, count)).round().long().unique()
        targets = target_rows(agent, states[:, keep], times=times, n=latent_n, rows=rows, reps=reps, gens=gens)
        for row in targets:
            j, k, _ = place[row["seed"] * count + int(keep[row.pop("state")])]
            row.update(run=run.name, seed=seeds[row["seed"]], start=j, step=k)
    return source, returns, fit, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="the --out directories of finished `rfm-teach train` runs")
    p.add_argument("--episodes", type=int, default=100, help="start states per seed for the returns (default 100)")
    p.add_argument("--fit-starts", type=int, default=20, help="start states whose raw episodes give the fit's states")
    p.add_argument("--every", type=int, default=10, help="keep every n-th state of those episodes (default 10)")
    p.add_argument("--samples", type=int, default=1024, help="policy and exact samples per state (default 1024)")
    p.add_argument("--grid", type=int, default=129, help="grid points per action axis (default 129)")
    p.add_argument("--bins", type=int, default=16, help="TV histogram bins per axis (default 16)")
    p.add_argument("--target-states", type=int, default=0,
                   help="states per seed at which to score the regression target (flow family; default 0: none)")
    p.add_argument("--times", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--latent-grid", type=int, default=501, help="grid points per latent axis (default 501)")
    p.add_argument("--run-id", required=True)
    p.add_argument("--out-root", default="/tmp/reeval")
    args = p.parse_args()
    for name in ("episodes", "fit_starts", "every", "samples", "bins"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.target_states < 0 or not all(0 < t < 1 for t in args.times):
        raise SystemExit(f"--target-states must be >= 0 and --times in (0, 1); got {args.target_states}, {args.times}")
    if args.grid < 3 or args.latent_grid < 3:
        raise SystemExit(f"--grid and --latent-grid must be >= 3; got {args.grid}, {args.latent_grid}")
    if args.fit_starts > args.episodes:
        raise SystemExit(f"--fit-starts ({args.fit_starts}) must be <= --episodes ({args.episodes})")
    torch.set_num_threads(1)
    out = Path(args.out_root) / args.run_id
    out.mkdir(parents=True, exist_ok=True)
    t0, sources, returns, fit, targets = time.perf_counter(), [], [], [], []
    for run in tqdm([Path(r) for r in args.runs], desc="runs"):
        source, run_returns, run_fit, run_targets = measure(
            run, episodes=args.episodes, fit_starts=args.fit_starts, every=args.every, samples=args.samples,
            n=args.grid, bins=args.bins, target_states=args.target_states, times=tuple(args.times),
            latent_n=args.latent_grid)
        sources.append(source)
        returns += run_returns
        fit += run_fit
        targets += run_targets
    files = [("returns.csv", returns, ["run", "seed", "mode", "start", "return"]), ("fit.csv", fit, FIT_COLUMNS)]
    if targets:
        files.append(("regression_target.csv", targets, TARGET_COLUMNS))
    for name, rows, columns in files:
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    write_manifest(out, command="python benchmarks/actor_fit.py " + " ".join(sys.argv[1:]),
                   seeds=sorted({r["seed"] for r in returns}), wall_time_s=time.perf_counter() - t0, device="cpu",
                   extra={"experiment": "actor_fit", "modes": list(MODES), "episodes": args.episodes,
                          "fit_starts": args.fit_starts, "every": args.every, "samples": args.samples,
                          "grid": args.grid, "bins": args.bins, "target_states": args.target_states,
                          "times": args.times, "latent_grid": args.latent_grid, "latent_extent": LATENT_EXTENT,
                          "start_states": "env j reset with seed 10_000 + j, j < episodes", "sources": sources})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
