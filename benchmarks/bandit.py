"""The contextual bandit, proved: does the raw policy sample pi* ∝ exp(r / lambda)? Every estimator, both critics.

Each (variant, critic, seed) is one run of the online loop exactly as ``rfm-teach train`` runs it
(:func:`rfm_teach.train.train` with ``make_config(preset, env_id=BANDIT_ID, total_steps, seed,
agent={temperature, **variant})``). After training, the final agent (restored from its checkpoint)
is evaluated per context with ``--samples`` raw policy samples against the exact pi*(a | c) on a grid:

- ``raw_return``: E[r] of raw samples (one policy sample per action: what the distribution is worth);
- ``best_return``: E[r] of the best-of-M particle by the agent's Q (the authors' protocol; SAC: tanh(mean));
- ``wall``: fraction of raw action coordinates with |a_j| > 0.95, beside pi*'s exact ``wall_pi``;
- ``tv``: grid total variation of raw samples vs pi* (:func:`rfm_teach.metrics.grid_tv`), beside
  ``tv_floor``, the TV of as many exact samples;
- ``sw2``: sliced Wasserstein-2 of raw samples vs exact samples, beside ``sw2_floor`` (exact vs exact);
- ``return_pi``: E_{pi*}[r], the raw return of a perfect policy.

Writes ``runs.csv`` (one row per run and context), ``summary.csv`` (per variant and critic: mean,
min and max over seeds of the context-averaged metrics, and a 95 % Student-t interval of the mean)
and ``manifest.json`` into ``--out`` (default ``rfm_teach/results/bandit/<run_id>``).

Usage::

    python benchmarks/bandit.py --variants rfm rfm_paper sac --critics learned exact --seeds 0 1 2 --jobs 2
    python benchmarks/bandit.py --variants rfm_raw_endpoints --critics learned --seeds 0 1 2 3 4 --batched
    python benchmarks/bandit.py --quick          # a few hundred steps, to check the script itself
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: Named agent settings. "rfm" is the library default (cv="auto", proposal="policy"); "rfm_paper" is the
#: authors' estimator (plug-in c, reverse-kernel proposal); noise/gradient are the two published
#: families with their own (kernel) proposal.
VARIANTS: dict[str, dict] = {
    "rfm": {},
    "rfm_paper": {"cv": "plugin", "proposal": "kernel"},
    "rfm_auto_kernel": {"cv": "auto", "proposal": "kernel"},
    "noise": {"cv": "none", "proposal": "kernel"},
    "gradient": {"cv": "gradient", "proposal": "kernel"},
    "qsm": {"algo": "qsm"},
    "sac": {"algo": "sac"},
    "rfm_raw_endpoints": {"endpoints": "raw"},
    "rfm_diffusion": {"policy": "diffusion"},
    "rfm_diffusion_steps20": {"policy": "diffusion", "steps": 20},  # twice the authors' 10 sampler steps
    "rfm_diffusion_steps50": {"policy": "diffusion", "steps": 50},  # is the sampler what caps it?
    # is it the fit? the fixed-target diffusion policy used emb(t) (notebook 06); the preset's actor_lr was tuned on the flow
    "rfm_diffusion_time_t": {"policy": "diffusion", "steps": 20, "time_scale": 1.0},
    "rfm_diffusion_lr1e-3": {"policy": "diffusion", "steps": 20, "actor_lr": 1e-3},
    "rfm_diffusion_lr1e-2": {"policy": "diffusion", "steps": 20, "actor_lr": 1e-2},
    "rfm_diffusion_w128": {"policy": "diffusion", "steps": 20, "hidden": 128},  # twice the preset's actor width
    "rfm_exact_target": {"exact_target": True},  # needs --critics exact: the exact posterior of the true Q
    # the diffusion policy with a perfect estimator: is its gap to the flow the estimate or the fit?
    "rfm_diffusion_exact_target": {"policy": "diffusion", "steps": 20, "exact_target": True},
    "rfm_time_t": {"time_scale": 1.0},  # the authors' time embedding emb(t) instead of emb(1000 t)
    "rfm_exact_target_time_t": {"exact_target": True, "time_scale": 1.0},
    # the three-part mixture with fixed shares in every row (the default before the adaptive kernel share;
    # the stored "rfm" runs predate the marginal fit: joint-only mixture)
    "rfm_mix3": {"mixture": (0.25, 0.25, 0.5), "adaptive_share": False},
    # today's default proposal, named: the three-part mixture with the adaptive kernel share
    "rfm_adapt": {"mixture": (0.25, 0.25, 0.5), "adaptive_share": True},
}
CRITICS = {"learned": {}, "exact": {"exact_q": "bandit"}}
METRICS = ("raw_return", "best_return", "wall", "wall_pi", "tv", "tv_floor", "sw2", "sw2_floor", "return_pi")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "true": True, "false": False}.get(text, text)


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """["utd=2", "agent.actor_lr=1e-3"] -> ({"utd": 2}, {"actor_lr": 0.001})."""
    train, agent = {}, {}
    for item in items:
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"--set expects key=value or agent.key=value; got {item!r}")
        if key.startswith("agent."):
            agent[key[len("agent."):]] = _parse_value(value)
        else:
            train[key] = _parse_value(value)
    return train, agent


@torch.no_grad()
def evaluate_agent(agent, temperature: float, samples: int, seed: int) -> list[dict]:
    """Per-context metrics of a trained agent against the exact pi* (see the module docstring)."""
    from rfm_teach.envs import ContextualBandit, bandit_reward
    from rfm_teach.metrics import grid_tv, sliced_wasserstein

    env = ContextualBandit()
    gen = torch.Generator().manual_seed(10_000 + seed)
    rows = []
    for c, landscape in enumerate(env.landscapes):
        obs = torch.zeros(samples, len(env.landscapes))
        obs[:, c] = 1.0
        raw = agent.act(obs, "raw", gen).double()
        best = agent.act(obs, "argmax", gen).double()
        grid = env.exact_grid(c, temperature)
        mass = torch.softmax(grid.log_p, 0)
        exact_a, exact_b = grid.sample(samples, gen), grid.sample(samples, gen)
        rows.append({
            "context": c,
            "raw_return": float(bandit_reward(landscape, raw).mean()),
            "best_return": float(bandit_reward(landscape, best).mean()),
            "wall": float((raw.abs() > 0.95).double().mean()),
            "wall_pi": float(mass @ (grid.points.abs() > 0.95).double().mean(-1)),
            "tv": grid_tv(raw, grid),
            "tv_floor": grid_tv(exact_a, grid),
            "sw2": sliced_wasserstein(raw, exact_b, generator=gen),
            "sw2_floor": sliced_wasserstein(exact_a, exact_b, generator=gen),
            "return_pi": float(mass @ bandit_reward(landscape, grid.points)),
        })
    return rows


def run_one(job: dict) -> list[dict]:
    """Train one (variant, critic) for the job's seeds with the loop of ``rfm-teach train`` and evaluate each seed.

    One seed: :func:`rfm_teach.train.train`. Several (``--batched``): one process, one batched agent
    (:func:`rfm_teach.train.train_seeds`); ``train_wall_s`` is then the whole batch's time.
    """
    torch.set_num_threads(1)
    from rfm_teach.agent import Agent
    from rfm_teach.envs import BANDIT_ID, BANDIT_LANDSCAPES
    from rfm_teach.seeds import seed_slice
    from rfm_teach.train import make_config, train, train_seeds

    agent_cfg = {"temperature": job["temperature"], **job["agent_overrides"], **VARIANTS[job["variant"]],
                 **CRITICS[job["critic"]]}
    seeds = job["seeds"]
    config = make_config(job["preset"], env_id=BANDIT_ID, total_steps=job["steps"], seed=seeds[0],
                         device="cpu", **job["train_overrides"], agent=agent_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if len(seeds) == 1:
            result = train(config, Path(tmp) / "run", progress=False)
        else:
            result = train_seeds(config, seeds, tmp, progress=False)
        wall = time.perf_counter() - start
        state = torch.load(result["checkpoint"], weights_only=False)["agent"]
    rows = []
    for i, seed in enumerate(seeds):
        agent = Agent(len(BANDIT_LANDSCAPES), 2, config.agent, seed=seed)
        for part in ("actor", "critic"):
            getattr(agent, part).load_state_dict(seed_slice(state[part], i))
        agent.temperatures = [float(state["temperatures"][i])]
        seed_rows = evaluate_agent(agent, config.agent.temperature, job["samples"], seed)
        for row in seed_rows:
            row.update(variant=job["variant"], critic=job["critic"], seed=seed, train_wall_s=round(wall, 2),
                       agent=json.dumps({k: v for k, v in agent_cfg.items()}, sort_keys=True))
        print(f"{job['variant']:>18} {job['critic']:>7} seed {seed}: raw "
              f"{np.mean([r['raw_return'] for r in seed_rows]):.3f} / pi* {np.mean([r['return_pi'] for r in seed_rows]):.3f}, "
              f"wall {np.mean([r['wall'] for r in seed_rows]):.3f} / {np.mean([r['wall_pi'] for r in seed_rows]):.3f}, "
              f"{wall:.0f} s", flush=True)
        rows += seed_rows
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (variant, critic): context-averaged metrics, then mean / min / max / t-interval over seeds."""
    from scipy import stats

    groups: dict[tuple, dict[int, list[dict]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["critic"]), {}).setdefault(row["seed"], []).append(row)
    out = []
    for (variant, critic), by_seed in groups.items():
        summary = {"variant": variant, "critic": critic, "n_seeds": len(by_seed)}
        for metric in METRICS:
            per_seed = np.array([np.mean([r[metric] for r in ctx]) for ctx in by_seed.values()])
            n = len(per_seed)
            half = float(stats.t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            summary.update({f"{metric}_mean": float(per_seed.mean()), f"{metric}_min": float(per_seed.min()),
                            f"{metric}_max": float(per_seed.max()), f"{metric}_ci95": half})
        summary["raw_over_pi"] = summary["raw_return_mean"] / summary["return_pi_mean"]
        summary["wall_over_pi"] = summary["wall_mean"] / summary["wall_pi_mean"]
        out.append(summary)
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--critics", nargs="+", default=["learned", "exact"], choices=list(CRITICS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000, help="environment steps per run (the bar: 3000)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--samples", type=int, default=2000, help="raw samples per context for the evaluation")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides on top of the preset: TrainConfig fields or agent.<field>")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one torch thread each)")
    p.add_argument("--batched", action="store_true",
                   help="train the seeds of each (variant, critic) together in one process (rfm_teach.train.train_seeds)")
    p.add_argument("--quick", action="store_true", help="300 steps, 1 seed, rfm and sac: check the script")
    p.add_argument("--out", default=None, help="output directory (default rfm_teach/results/bandit/<run_id>)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.variants, args.critics, args.samples = 300, [0], ["rfm", "sac"], ["learned"], 200
    exact_targets = [v for v in args.variants if VARIANTS[v].get("exact_target")]
    if exact_targets and args.critics != ["exact"]:
        raise SystemExit(f"--variants {' '.join(exact_targets)} need --critics exact (the exact target is the true Q's posterior)")
    train_overrides, agent_overrides = parse_overrides(args.set)
    seed_groups = [list(args.seeds)] if args.batched else [[s] for s in args.seeds]
    jobs = [{"variant": v, "critic": c, "seeds": g, "steps": args.steps, "preset": args.preset,
             "temperature": args.temperature, "samples": args.samples, "train_overrides": train_overrides,
             "agent_overrides": agent_overrides}
            for v in args.variants for c in args.critics for g in seed_groups]
    run_id = f"{args.preset}_steps{args.steps}_T{args.temperature:g}" + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else Path(__file__).resolve().parents[1] / "rfm_teach" / "results" / "bandit" / run_id
    out.mkdir(parents=True, exist_ok=True)
    from rfm_teach.results import git_state, write_manifest

    git_at_start = git_state(exclude=out)  # the code that runs; the manifest's own "git" is taken at the end
    start = time.perf_counter()
    rows: list[dict] = []
    partial = out / "runs.partial.csv"  # rows so far, rewritten as each run ends (removed when the study ends)
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for result in pool.imap_unordered(run_one, jobs, chunksize=1):
                rows += result
                _write_csv(partial, rows)
    else:
        for job in jobs:
            rows += run_one(job)
            _write_csv(partial, rows)
    rows.sort(key=lambda r: (args.variants.index(r["variant"]), args.critics.index(r["critic"]), r["seed"], r["context"]))
    _write_csv(out / "runs.csv", rows)
    partial.unlink()
    summary = summarise(rows)
    _write_csv(out / "summary.csv", summary)
    for s in summary:
        print(f"{s['variant']:>18} {s['critic']:>7} ({s['n_seeds']} seeds): raw {s['raw_return_mean']:.3f} "
              f"[{s['raw_return_min']:.3f}, {s['raw_return_max']:.3f}] = {100 * s['raw_over_pi']:.0f} % of "
              f"E_pi*[r] {s['return_pi_mean']:.3f}; best-of-N {s['best_return_mean']:.3f}; wall "
              f"{s['wall_mean']:.4f} ({s['wall_over_pi']:.1f}x pi*); TV {s['tv_mean']:.3f} (floor "
              f"{s['tv_floor_mean']:.3f}); SW2 {s['sw2_mean']:.3f} (floor {s['sw2_floor_mean']:.3f})")
    write_manifest(out, command="python benchmarks/bandit.py " + " ".join(shlex.quote(a) for a in argv),
                   seeds=sorted(set(args.seeds)), wall_time_s=time.perf_counter() - start, device="cpu",
                   extra={"git_at_start": git_at_start, "env_id": "rfm_teach/ContextualBandit-v0", "preset": args.preset, "steps": args.steps,
                          "temperature": args.temperature, "samples_per_context": args.samples,
                          "variants": {v: VARIANTS[v] for v in args.variants},
                          "critics": {c: CRITICS[c] for c in args.critics},
                          "overrides": {"train": train_overrides, "agent": agent_overrides},
                          "batched": args.batched,
                          "evaluation": "raw sample (one policy sample) and best-of-M by the agent's Q "
                                        "(SAC: tanh(mean)); distances against exact pi* on a 201^2 grid"})
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
