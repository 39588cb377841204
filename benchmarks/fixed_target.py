"""Fit flow/diffusion policies onto fixed Boltzmann targets with each estimator at equal K; store curves + manifest.

Every :class:`~rfm_teach.fixed_target.FitConfig` field is a flag (``--steps 800``, ``--hidden 128``,
``--lr-schedule constant``: generated from the dataclass, with its help text); the sweep flags take
lists: ``--toys``, ``--policies``, ``--seeds`` and ``--estimators`` (``auto+policy`` = cv auto with the
policy proposal, our default; ``plugin``, ``none``, ``gradient`` = the kernel-only estimators, as in the
paper; ``exact`` = the oracle). ``--set FIELD=V1,V2`` sweeps any other field (the oracle study).

Usage. The oracle study that chose the defaults (one setting swept at a time, the oracle only)::

    python benchmarks/fixed_target.py --toys two_moons --seeds 0 --estimators exact --steps 2400 \
        --eval-every 400 --set time_scale=1 --set hidden=128,256 --set n_blocks=2,3 --run-id oracle_capacity

The committed comparison at the defaults (256 x 3, 2400 steps, emb(t); 1.5-4 minutes per fit on one CPU
thread), one run per target and estimator group::

    python benchmarks/fixed_target.py --toys two_moons --seeds 0 1 2 --estimators auto+policy exact \
        --run-id large_two_moons --no-progress
    python benchmarks/fixed_target.py --toys two_moons --seeds 0 1 2 --estimators plugin none \
        --run-id large_kernel_two_moons --no-progress

(the same for ``ring`` and ``bimodal6``; ``--seeds 0 --estimators gradient --run-id large_gradient_<toy>``;
``--policies diffusion ... --run-id large_diffusion_two_moons``). The first, smaller comparison
(``compare_flow_*``: ``--steps 800 --hidden 128 --n-blocks 2 --time-scale 1000``) and the time-embedding
study (``--estimators exact --set time_scale=1,1000 --run-id oracle_time_scale``) are stored beside it.

Writes ``rfm_teach/results/fixed_target/<run_id>/`` (rewritten after every fit, so a stopped sweep
keeps what it finished):

- ``curves.csv``: one row per (toy, policy, estimator, seed, evaluation step): sw, mmd2, tv, outside, loss, ess, c, lr;
- ``final.csv``: the last row of every fit;
- ``floor.csv``: the same distances between two independent exact draws (the sampling-noise floor), per toy and seed;
- ``samples.csv``: the first 200 final samples of every fit (first two coordinates), for figures;
- ``manifest.json``: command, commit + dirty flag, versions, device, wall time, file hashes and every
  fit's full config (``extra.configs``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import torch

from rfm_teach.fixed_target import (CURVE_FIELDS, FLOOR_FIELDS, SAMPLE_FIELDS, FitConfig, estimator_fields,
                                    fit_to_target,
                                    manifest_extra, sample_rows, write_csv)
from rfm_teach.results import RESULTS_DIR, load_manifest, write_manifest

SWEPT = {"toy": "toys", "policy": "policies", "seed": "seeds"}  # fields given as lists
FINAL_FIELDS = [f for f in CURVE_FIELDS if f not in ("loss", "ess", "c", "lr")]


def _parse_value(kind, text: str):
    if kind in (int, "int"):
        return int(text)
    if kind in (float, "float"):
        return float(text)
    if kind in (bool, "bool"):
        if text.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
        return text.lower() == "true"
    if str(kind).startswith("tuple"):  # the mixture: three shares, comma-separated
        return tuple(float(v) for v in text.split(","))
    return text


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    for f in dataclasses.fields(FitConfig):
        if f.name in SWEPT or f.name in ("cv", "proposal"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                       type=lambda s, k=f.type: _parse_value(k, s), help=f"{f.metadata.get('help', '')} (default {f.default})")
    defaults = FitConfig()
    p.add_argument("--toys", nargs="+", default=[defaults.toy])
    p.add_argument("--policies", nargs="+", default=[defaults.policy], choices=["flow", "diffusion"])
    p.add_argument("--seeds", nargs="+", type=int, default=[defaults.seed])
    p.add_argument("--estimators", nargs="+", default=["auto+policy", "plugin", "none", "gradient", "exact"],
                   help="cv[+policy]: auto+policy (ours, the default), plugin (the paper's), none, gradient, exact (oracle)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2",
                   help="sweep any other FitConfig field over the listed values (e.g. --set hidden=128,256)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings comparable)")
    p.add_argument("--run-id", default=None, help="default: fixed_target_<steps>steps")
    p.add_argument("--out-root", default=str(RESULTS_DIR / "fixed_target"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="keep the fits already stored in the run directory and run only the missing ones")
    return p


def configs_from_args(args: argparse.Namespace) -> list[FitConfig]:
    """One FitConfig per (seed, toy, policy, swept values, estimator): seeds outermost, so a stopped sweep has whole seeds."""
    types = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    base = {f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig) if hasattr(args, f.name)}
    sweeps = [{}]
    for item in args.set:
        name, _, values = item.partition("=")
        if name not in types or not values:
            raise SystemExit(f"--set expects FIELD=V1,V2 with FIELD one of FitConfig's fields; got {item!r}")
        sweeps = [{**s, name: _parse_value(types[name], v)} for s in sweeps for v in values.split(",")]
    out = []
    for seed in args.seeds:
        for toy in args.toys:
            for policy in args.policies:
                for sweep in sweeps:
                    for est in args.estimators:
                        cfg = FitConfig(**{**base, "toy": toy, "policy": policy, "seed": seed, **sweep,
                                           **estimator_fields(est)})
                        out.append(cfg.validate())
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = configs_from_args(args)
    run_id = args.run_id or f"fixed_target_{args.steps}steps"
    run_dir = Path(args.out_root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/fixed_target.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    rows, finals, floors, samples, done = [], [], {}, [], []
    commands, previous_wall = [command.strip()], 0.0
    sweep_keys = sorted({item.partition("=")[0] for item in args.set})
    if args.resume and (run_dir / "manifest.json").is_file():
        old = load_manifest(run_dir)  # validated: the stored files are the ones the manifest hashed
        done = [FitConfig(**c) for c in old["extra"]["configs"]]
        commands = old["extra"].get("commands", [old["command"]]) + commands
        previous_wall = old["wall_time_s"] or 0.0
        rows, finals, samples = (_read_csv(run_dir / n) for n in ("curves.csv", "final.csv", "samples.csv"))
        floors = {(r["toy"], int(r["seed"])): r for r in _read_csv(run_dir / "floor.csv")}
        configs = [c for c in configs if c not in done]
        print(f"resuming {run_dir}: {len(done)} fits stored, {len(configs)} to run", file=sys.stderr, flush=True)
    for i, cfg in enumerate(configs):
        res = fit_to_target(cfg, progress=not args.no_progress)
        extra_cols = {k: getattr(cfg, k) for k in sweep_keys}
        fit_rows = [{**r, **extra_cols} for r in res.to_rows()]
        rows += fit_rows
        finals.append(fit_rows[-1])
        floors[(cfg.toy, cfg.seed)] = {"toy": cfg.toy, "seed": cfg.seed, **res.floor}
        samples += [{**r, **extra_cols} for r in sample_rows(res, 200)]
        done.append(cfg)
        f = res.final()
        print(f"[{i + 1}/{len(configs)}] {cfg.toy} {cfg.policy} {cfg.label} seed {cfg.seed} {extra_cols}: "
              f"SW2 {f['sw']:.4f}  MMD² {f['mmd2']:.5f}  TV {f['tv']:.4f}  ({f['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        # rewrite the run directory after every fit: a stopped sweep keeps a valid, smaller result
        write_csv(run_dir / "curves.csv", CURVE_FIELDS + sweep_keys, rows)
        write_csv(run_dir / "final.csv", FINAL_FIELDS + sweep_keys, finals)
        write_csv(run_dir / "floor.csv", FLOOR_FIELDS[:1] + ["seed"] + FLOOR_FIELDS[1:], list(floors.values()))
        write_csv(run_dir / "samples.csv", SAMPLE_FIELDS + sweep_keys, samples)
        extra = {**manifest_extra(done), "swept": sweep_keys, "finished_fits": len(done), "threads": args.threads,
                 "commands": commands}
        write_manifest(run_dir, command=" && ".join(commands), seeds=sorted({c.seed for c in done}),
                       wall_time_s=previous_wall + time.perf_counter() - start, device="cpu", extra=extra)
    print(f"wrote {run_dir} ({len(done)} fits) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
