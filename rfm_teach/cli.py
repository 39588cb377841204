"""Command line: ``rfm-teach train`` runs the online loop for one or more seeds; ``rfm-teach plot`` draws curves.

Examples::

    rfm-teach train --env rfm_teach/ContextualBandit-v0 --algo rfm --preset tiny --seeds 0 1 2 --out runs/bandit
    rfm-teach train --env cheetah-run --algo rfm --steps 250000 --seed 0 --device cuda --out runs/dmc_cheetah_rfm
    rfm-teach train --env HalfCheetah-v5 --algo sac --temperature-mode reward_scale --out runs/hc_sac
    rfm-teach plot runs/bandit runs/bandit_sac -o bandit.png

``train`` writes, per seed, ``OUT/seed_<s>/`` = {config.json, log.csv, manifest.json} (small enough to
store under ``rfm_teach/results/``) and ``OUT/checkpoints/seed_<s>.pt``. Re-running the same command
with ``--resume`` continues from the checkpoints exactly.

Derived in notebooks/08_scaling_up.ipynb.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from .agent import ALGOS
from .train import PRESETS, make_config, train

__all__ = ["build_parser", "load_curves", "main", "mean_ci95", "plot_runs"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rfm-teach", description="Reverse Flow Matching: online RL runs and plots.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="run the online actor-critic loop for one or more seeds")
    tr.add_argument("--env", required=True, help="env id: rfm_teach/ContextualBandit-v0, HalfCheetah-v5, cheetah-run, ...")
    tr.add_argument("--algo", default="rfm", choices=ALGOS, help="rfm (cv=auto), noise (cv=none), gradient, sac")
    tr.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="paper defaults or a tiny CPU run")
    tr.add_argument("--steps", type=int, default=None, help="environment steps (default: the preset's)")
    seeds = tr.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds, run one after another")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    tr.add_argument("--policy", default=None, choices=("flow", "diffusion"), help="actor family (default flow)")
    tr.add_argument("--temperature", type=float, default=None, help="lambda (default 0.02)")
    tr.add_argument("--temperature-mode", default=None, choices=("fixed", "reward_scale"),
                    help="fixed lambda, or lambda x std of warm-up rewards (for reward scales unlike DMC's)")
    tr.add_argument("--warmup-steps", type=int, default=None, help="random steps before updates (default: preset's)")
    tr.add_argument("--batch-size", type=int, default=None, help="transitions per update (default: preset's)")
    tr.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    tr.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    tr.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    tr.add_argument("--max-episode-steps", type=int, default=None, help="override the env's time limit")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints if present")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--out", required=True, help="output directory, e.g. runs/cheetah_rfm")

    pl = sub.add_parser("plot", help="mean return with a 95%% CI band over seeds, one line per run directory")
    pl.add_argument("runs", nargs="+", help="directories made by `rfm-teach train --out` (or single seed_<s> dirs)")
    pl.add_argument("-o", "--output", required=True, help="figure file (png, pdf, svg)")
    pl.add_argument("--metric", default="return_argmax", choices=("return_argmax", "return_raw", "train_return"))
    return parser


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from .results import write_manifest  # imported here: plotting needs no git/provenance machinery

    overrides: dict = {"env_id": args.env, "device": args.device}
    for key, value in (("total_steps", args.steps), ("warmup_steps", args.warmup_steps),
                       ("batch_size", args.batch_size), ("eval_every", args.eval_every),
                       ("eval_episodes", args.eval_episodes), ("checkpoint_every", args.checkpoint_every),
                       ("max_episode_steps", args.max_episode_steps)):
        if value is not None:
            overrides[key] = value
    agent = {"algo": args.algo}
    for key, value in (("policy", args.policy), ("temperature", args.temperature),
                       ("temperature_mode", args.temperature_mode)):
        if value is not None:
            agent[key] = value
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1; got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else [0 if args.seed is None else args.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct; got {seeds}")
    # Validate every seed's config before any environment is built or any step is taken.
    configs = [make_config(args.preset, seed=seed, agent=agent, **overrides) for seed in seeds]
    from .envs import make_env

    make_env(args.env).close()  # unknown id, non-Box space, missing extra: fail now, not after seed 0
    out = Path(args.out)
    command = "rfm-teach " + " ".join(argv)
    for config in configs:
        run_dir = out / f"seed_{config.seed}"
        result = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
        extra = {
            "env_id": config.env_id, "algo": config.agent.algo, "preset": args.preset,
            "steps": result["step"], "evaluation": {
                "return_argmax": f"best of {config.agent.particles} policy particles by min-Q, "
                                 f"{config.eval_episodes} episodes",
                "return_raw": f"one policy sample per step, {config.eval_episodes} episodes",
            },
            "config": config.to_dict(),
        }
        write_manifest(run_dir, command=command, seeds=[config.seed], extra=extra,
                       wall_time_s=result["wall_time_s"], device=result["device"])
        final = result["final_eval"] or {}
        print(f"seed {config.seed}: step {result['step']}, return_argmax {final.get('return_argmax')}, "
              f"return_raw {final.get('return_raw')}, {result['wall_time_s']:.1f} s -> {run_dir}")
    return 0


def load_curves(run: str | Path, metric: str = "return_argmax") -> tuple[np.ndarray, np.ndarray]:
    """Steps (S,) and values (n_seeds, S) of ``metric`` from ``run`` (an --out dir or one seed dir).

    Seeds are truncated to the steps they all reached.
    """
    run = Path(run)
    logs = sorted(run.glob("seed_*/log.csv")) or ([run / "log.csv"] if (run / "log.csv").exists() else [])
    if not logs:
        raise ValueError(f"no log.csv under {str(run)!r} (expected seed_<s>/log.csv or log.csv)")
    curves = []
    for path in logs:
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f)]
        if rows and metric not in rows[0]:
            raise ValueError(f"{path} has no column {metric!r}")
        curves.append({int(r["step"]): float(r[metric]) if r[metric] else math.nan for r in rows})
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        raise ValueError(f"the seeds under {str(run)!r} share no evaluation step")
    return np.array(steps), np.array([[c[s] for s in steps] for c in curves])


def mean_ci95(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and the half-width of a 95% normal-approximation interval, 1.96 s / sqrt(n).

    Shapes: ``values`` (n_seeds, S) -> two arrays (S,). With one seed the half-width is zero.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must have shape (n_seeds, S) with n_seeds >= 1; got {values.shape}")
    mean = np.nanmean(values, 0)
    if values.shape[0] == 1:
        return mean, np.zeros_like(mean)
    return mean, 1.96 * np.nanstd(values, 0, ddof=1) / math.sqrt(values.shape[0])


def plot_runs(runs: list[str | Path], output: str | Path | None = None, metric: str = "return_argmax", ax=None):
    """Mean over seeds with a 95% normal-approximation CI band (mean ± 1.96 s / sqrt(n)), one line per run.

    No smoothing. A single seed gets no band. Colours follow the algorithm name where it is an
    estimator of :mod:`rfm_teach.plotting` (rfm -> "auto", noise -> "none", gradient, sac).
    """
    import json

    import matplotlib.pyplot as plt

    from .plotting import set_style, style_of

    set_style()
    own = ax is None
    if own:
        _, ax = plt.subplots()
    style_key = {"rfm": "auto", "noise": "none", "gradient": "gradient", "sac": "sac"}
    for run in runs:
        steps, values = load_curves(run, metric)
        configs = sorted(Path(run).glob("seed_*/config.json")) or [Path(run) / "config.json"]
        algo = json.loads(configs[0].read_text())["agent"]["algo"] if configs[0].exists() else None
        style = style_of(style_key[algo]) if algo in style_key else {}
        style["label"] = f"{Path(run).name} ({values.shape[0]} seed{'s' if values.shape[0] > 1 else ''})"
        mean, half = mean_ci95(values)
        line = ax.plot(steps, mean, **style)[0]
        if values.shape[0] > 1:
            ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel({"return_argmax": "return (best-of-N eval)", "return_raw": "return (raw-sample eval)",
                   "train_return": "training episode return"}[metric])
    ax.legend()
    if own and output is not None:
        ax.figure.savefig(output, bbox_inches="tight")
        plt.close(ax.figure)
    return ax


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rfm-teach`` console script. Bad arguments exit with status 2 and a clear message."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, argv)
        plot_runs(args.runs, args.output, args.metric)
        print(f"wrote {args.output}")
        return 0
    except ValueError as err:
        parser.exit(2, f"rfm-teach: error: {err}\n")
