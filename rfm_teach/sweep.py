"""Sweeps: a grid of runs (envs x algos x seeds x any config field) on Ray, one directory and manifest each.

::

    runs = grid(base, envs=[...], algos=["rfm", "sac"], seeds=[0, 1], fields={"agent.K": [16, 64]})
    report = run_sweep(runs, "runs/sweep")            # a local Ray is started (and stopped) for you
    run_sweep(runs, "runs/sweep", address="auto")     # or an existing cluster (`ray start --head` ...)

Layout: ``OUT/<run name>/`` = {config.json, log.csv, manifest.json}, the same files as ``rfm-teach train``
writes for one seed, and ``OUT/checkpoints/<run name>.pt``. A run whose manifest is present, valid,
``finished`` and made with the same config is skipped, so calling the sweep again after a stop (Ctrl-C,
a lost node) runs only what is missing; a run with a checkpoint but no finished manifest resumes from
it exactly. One failed run is reported with its error and does not stop the others. Ray is an optional
extra (``pip install "rfm_teach[ray]"``) and is imported only here.

Each run is one Ray task with ``cpus_per_run`` CPUs and as many torch threads (default 1: small
networks on a CPU are fastest one thread per run, many runs side by side). On a cluster of several
machines every node needs the same environment (this package installed) and ``OUT`` must be a path on
a filesystem all nodes share: each run is written by the node that runs it. ``--device cuda`` with
``cpus_per_run`` alone does not reserve a GPU; add ``--gpus-per-run`` for that.

Derived in notebooks/08_scaling_up.ipynb.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import time
import traceback
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Literal

import tyro

from .agent import AgentConfig
from .train import PRESETS, TrainConfig, make_config

__all__ = ["Run", "SweepArgs", "grid", "parse_grid", "run_name", "run_status", "run_sweep", "sweep_main"]


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its directory name and its full config."""

    name: str
    config: TrainConfig


def _field_type(path: str):
    """The annotation of a config field given as "total_steps" or "agent.K" (hyphens allowed)."""
    parts = path.replace("-", "_").split(".")
    if len(parts) == 1:
        cls, name = TrainConfig, parts[0]
    elif len(parts) == 2 and parts[0] == "agent":
        cls, name = AgentConfig, parts[1]
    else:
        raise ValueError(f"--grid: unknown field {path!r}; expected a TrainConfig field (e.g. total_steps) "
                         "or agent.<AgentConfig field> (e.g. agent.K)")
    hints = typing.get_type_hints(cls)
    if name not in hints or name == "agent":
        known = sorted(f.name for f in fields(cls) if f.name != "agent")
        raise ValueError(f"--grid: unknown field {path!r}; {cls.__name__} has {known}")
    return ".".join(parts), hints[name]


def _coerce(text: str, kind, path: str):
    """Parse one grid value with the field's type (int, float, str, bool, None and unions of them)."""
    args = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if type(None) in args and text.lower() in ("none", "null"):
        return None
    for t in (bool, int, float, str):  # the most specific first: "1" is an int before a float or a str
        if t not in args:
            continue
        if t is bool:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            continue
        try:
            return t(text)
        except ValueError:
            continue
    raise ValueError(f"--grid: {path}={text!r} is not a valid {kind}")


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list]:
    """``["agent.K=16,64", "total_steps=1000"]`` -> ``{"agent.K": [16, 64], "total_steps": [1000]}``."""
    out: dict[str, list] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key or not values:
            raise ValueError(f"--grid entries look like FIELD=V1,V2 (e.g. agent.K=16,64); got {item!r}")
        path, kind = _field_type(key.strip())
        if path in out:
            raise ValueError(f"--grid: field {path!r} given twice")
        if path in ("env_id", "seed", "agent.algo"):
            raise ValueError(f"--grid: {path} has its own flag (--env, --seeds, --algo)")
        out[path] = [_coerce(v.strip(), kind, path) for v in values.split(",")]
    return out


def _set(config: TrainConfig, path: str, value) -> TrainConfig:
    if path.startswith("agent."):
        return replace(config, agent=replace(config.agent, **{path[6:]: value}))
    return replace(config, **{path: value})


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def run_name(config: TrainConfig, varied: list[str]) -> str:
    """``<env>_<algo>[_<field>=<value> ...]_seed<s>``, e.g. ``ContextualBandit-v0_rfm_K=16_seed0``."""
    parts = [_slug(config.env_id.split("/")[-1]), _slug(config.agent.algo)]
    for path in varied:
        value = getattr(config.agent, path[6:]) if path.startswith("agent.") else getattr(config, path)
        parts.append(f"{path.split('.')[-1]}={_slug(value)}")
    return "_".join(parts + [f"seed{config.seed}"])


def grid(base: TrainConfig, *, envs: list[str] | None = None, algos: list[str] | None = None,
         seeds: list[int] | None = None, fields: dict[str, list] | None = None) -> list[Run]:
    """Every combination of envs x algos x grid fields x seeds on top of ``base``, each validated.

    Defaults: the base config's env, algo and seed. ``fields`` maps "total_steps" or "agent.K" to values.
    Raises ValueError naming the first bad combination (before anything runs).
    """
    envs = list(envs) if envs else [base.env_id]
    algos = list(algos) if algos else [base.agent.algo]
    seeds = list(seeds) if seeds else [base.seed]
    fields = dict(fields or {})
    for name, values in (("--env", envs), ("--algo", algos), ("--seeds", seeds)):
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"{name} values must be distinct; got {values}")
    combos: list[dict] = [{}]
    for path, values in fields.items():
        combos = [{**c, path: v} for c in combos for v in values]
    runs = []
    for env in envs:
        for algo in algos:
            for combo in combos:
                for seed in seeds:
                    config = replace(base, env_id=env, seed=seed, agent=replace(base.agent, algo=algo))
                    for path, value in combo.items():
                        config = _set(config, path, value)
                    config.validate()
                    runs.append(Run(run_name(config, list(fields)), config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("two runs of the sweep would share a directory name; make the grid values distinct")
    return runs


def run_status(run: Run, out: str | os.PathLike) -> str:
    """"done" (a finished run with this config), "resume" (a checkpoint to continue from), "new", or
    "conflict" (the directory holds a finished run of a different config: it is never overwritten)."""
    from .results import MANIFEST, validate_manifest

    run_dir = Path(out) / run.name
    if (run_dir / MANIFEST).is_file():
        try:
            manifest = validate_manifest(run_dir)
        except (ValueError, json.JSONDecodeError):
            manifest = None
        if manifest is not None and manifest["extra"].get("finished"):
            if manifest["extra"].get("config") == run.config.to_dict():
                return "done"
            return "conflict"
    ckpt = Path(out) / "checkpoints" / f"{run.name}.pt"
    return "resume" if ckpt.exists() else "new"


def _run_one(config: dict, run_dir: str, resume: bool, threads: int, command: str) -> dict:
    """One run inside a Ray worker; errors come back as data so the driver can report them plainly."""
    import torch

    from .cli import keep_freed_memory
    from .train import train

    torch.set_num_threads(threads)
    keep_freed_memory()
    t0 = time.perf_counter()
    try:
        result = train(TrainConfig.from_dict(config), run_dir, resume=resume, progress=False, command=command)
    except Exception as err:  # noqa: BLE001  (reported per run, never fatal to the sweep)
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                "wall_time_s": time.perf_counter() - t0}
    return {"ok": True, "step": result["step"], "final_eval": result["final_eval"],
            "wall_time_s": result["wall_time_s"]}


def _start_ray(ray, address: str | None, num_cpus: int, attempts: int = 3) -> None:
    """Connect to ``address`` or start a local Ray (no dashboard). Ray gives a local node a fixed 30 s to
    register; on a loaded machine it can miss that, so a local start is retried."""
    if address is not None:
        ray.init(address=address, log_to_driver=False)
        return
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as err:  # noqa: BLE001  (ray raises a bare Exception on this timeout)
            ray.shutdown()
            if "timed out during startup" not in str(err):
                raise
            if attempt == attempts - 1:
                raise RuntimeError(
                    f"could not start a local Ray in {attempts} attempts: its node did not register within "
                    "Ray's fixed 30 s (an overloaded machine?). Start one yourself, `ray start --head "
                    "--num-cpus N`, and pass --address auto") from err


def run_sweep(runs: list[Run], out: str | os.PathLike, *, address: str | None = None, num_cpus: int | None = None,
              cpus_per_run: int = 1, num_gpus_per_run: float = 0, command: str = "python: rfm_teach.sweep.run_sweep(runs, out)",
              progress: bool = True) -> dict:
    """Run every unfinished run of ``runs`` as a Ray task; return {"done": [...], "finished": [...],
    "failed": {name: error}, "conflict": [...]}.

    Args:
        runs: from :func:`grid`.
        out: the sweep directory (created); run ``r`` writes ``out/r.name/``.
        address: an existing Ray cluster ("auto", "ray://host:10001", ...); None starts a local Ray with
            ``num_cpus`` CPUs (default: all of this machine's) and stops it at the end. A Ray already
            initialised in this process is used as it is.
        cpus_per_run: CPUs (and torch threads) per run.
        num_gpus_per_run: GPUs Ray reserves per run (e.g. 0.25 puts four runs on one GPU); 0 for CPU runs.
        command: recorded in each run's manifest.
        progress: one progress line (tqdm) for the whole sweep.

    Nothing is started when every run is done, so a second call of a finished sweep returns at once.
    """
    if isinstance(cpus_per_run, bool) or not isinstance(cpus_per_run, int) or cpus_per_run < 1:
        raise ValueError(f"cpus_per_run must be an int >= 1; got {cpus_per_run!r}")
    if not (isinstance(num_gpus_per_run, (int, float)) and num_gpus_per_run >= 0):
        raise ValueError(f"num_gpus_per_run must be a number >= 0; got {num_gpus_per_run!r}")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus must be an int >= 1 or None; got {num_cpus!r}")
    out = Path(out)
    status = {run.name: run_status(run, out) for run in runs}
    report: dict = {"done": [n for n, s in status.items() if s == "done"], "finished": [], "failed": {},
                    "conflict": [n for n, s in status.items() if s == "conflict"]}
    todo = [run for run in runs if status[run.name] in ("new", "resume")]
    if not todo:
        return report
    try:
        import ray
    except ImportError as err:
        raise ValueError('rfm-teach sweep needs Ray: pip install "rfm_teach[ray]" (or pip install ray)') from err
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        _start_ray(ray, address, max(num_cpus or os.cpu_count() or 1, cpus_per_run))
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=num_gpus_per_run, max_retries=0)(_run_one)
        pending = {
            task.remote(run.config.to_dict(), str(out / run.name), status[run.name] == "resume", cpus_per_run,
                        command): run.name
            for run in todo
        }
        bar = tqdm(total=len(runs), initial=len(report["done"]), desc="sweep", unit="run", disable=not progress,
                   file=sys.stderr)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001  (a worker that died: reported, not fatal)
                result = {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            if result["ok"]:
                report["finished"].append(name)
            else:
                report["failed"][name] = result["error"]
            bar.update(1)
            bar.set_postfix(failed=len(report["failed"]), running=len(pending))
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return report


# ---------------------------------------------------------------------------------------------------------
# `rfm-teach sweep`

@dataclass
class SweepArgs:
    """``rfm-teach sweep``: a base :class:`TrainConfig` plus the grid and where to run it."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    preset: Literal[tuple(sorted(PRESETS))] = "paper"  # type: ignore[valid-type]
    """defaults of every run: "paper" (the authors' protocol) or "tiny" (a CPU run of minutes)."""
    envs: tuple[str, ...] = ()
    """env ids (default: --env-id); short form --env."""
    algos: tuple[str, ...] = ()
    """algorithms (default: --agent.algo); short form --algo."""
    seeds: tuple[int, ...] = ()
    """seeds (default: --seed)."""
    grid: tuple[str, ...] = ()
    """further axes, FIELD=V1,V2 (e.g. agent.K=16,64 agent.cv=plugin,auto total_steps=1000)."""
    out: str | None = None
    """the sweep directory (default: runs/sweep_<UTC time>); each run writes OUT/<run name>/."""
    address: str | None = None
    """an existing Ray cluster ("auto", "ray://head:10001"); default: start a local Ray."""
    num_cpus: int | None = None
    """CPUs of the local Ray (default: all of this machine's)."""
    cpus_per_run: int = 1
    """CPUs reserved per run, and its torch threads."""
    gpus_per_run: float = 0.0
    """GPUs reserved per run (e.g. 0.25: four runs share one GPU); use with --device cuda."""
    dry_run: bool = False
    """list the runs and their status (done / resume / new) and start nothing."""
    progress: bool = True
    """one progress line for the whole sweep."""



_SWEEP_EXAMPLES = """\
Run a grid of envs x algos x seeds x config fields on Ray, each run its own directory with a manifest.
Finished runs are skipped (call it again to resume a stopped sweep); a failed run is reported, not fatal.

examples:
  rfm-teach sweep --env rfm_teach/ContextualBandit-v0 --algo rfm sac --seeds 0 1 --preset tiny --out runs/bandit
  rfm-teach sweep --env cheetah-run walker-walk --grid agent.cv=plugin,auto agent.K=16,64 --seeds 0 1 2 3 4
  rfm-teach sweep --address auto --env cheetah-run --algo rfm sac --seeds 0 1 2 --device cuda --out runs/dmc

short forms: --env = --envs, --algo = --algos, --seed = --seeds, --steps = --total-steps, --cv = --agent.cv,
--temperature = --agent.temperature, --temperature-mode = --agent.temperature-mode, --policy = --agent.policy.
"""


def sweep_main(argv: list[str]) -> int:
    """``rfm-teach sweep ...``; returns 0 when every run is done, 1 when some failed. Bad input: ValueError."""
    from .cli import TRAIN_ALIASES, UsageError, _preset_of, check_out_dir, rewrite_aliases, validate_for_cli

    aliases = {**TRAIN_ALIASES, "--env": "--envs", "--algo": "--algos", "--seed": "--seeds"}
    args_in = rewrite_aliases(argv, aliases)
    preset = _preset_of(args_in)
    args = tyro.cli(SweepArgs, args=args_in, prog="rfm-teach sweep", description=_SWEEP_EXAMPLES,
                    default=SweepArgs(config=make_config(preset), preset=preset))
    base = validate_for_cli(args.config)
    if base.total_steps <= base.warmup_steps:
        raise UsageError(f"--steps ({base.total_steps}) must exceed --warmup-steps ({base.warmup_steps}): "
                         "no update would run")
    if args.cpus_per_run < 1:
        raise UsageError(f"--cpus-per-run must be an int >= 1; got {args.cpus_per_run}")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UsageError(f"--num-cpus must be an int >= 1; got {args.num_cpus}")
    try:
        runs = grid(base, envs=list(args.envs), algos=list(args.algos), seeds=list(args.seeds),
                    fields=parse_grid(args.grid))
    except ValueError as err:
        from .cli import _names_to_flags

        raise UsageError(_names_to_flags(_names_to_flags(str(err), True), False)) from err
    from .envs import make_env

    for env in dict.fromkeys(r.config.env_id for r in runs):
        make_env(env).close()  # an unknown id fails here, not in every worker
    if args.out is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"sweep_{stamp}"
    else:
        out = Path(args.out)
    if args.dry_run:
        for run in runs:
            print(f"{run_status(run, out):8s} {out / run.name}")
        return 0
    check_out_dir(out, "--out")
    command = "rfm-teach sweep " + " ".join(argv)
    if args.gpus_per_run < 0:
        raise UsageError(f"--gpus-per-run must be >= 0; got {args.gpus_per_run}")
    try:
        report = run_sweep(runs, out, address=args.address, num_cpus=args.num_cpus, cpus_per_run=args.cpus_per_run,
                           num_gpus_per_run=args.gpus_per_run, command=command, progress=args.progress)
    except RuntimeError as err:
        print(f"rfm-teach sweep: error: {err}", file=sys.stderr)
        return 1
    (out / "sweep.json").write_text(json.dumps({"command": command, "runs": [r.name for r in runs], **report},
                                               indent=2) + "\n")
    todo = len(runs) - len(report["done"]) - len(report["conflict"])
    print(f"sweep {out}: {len(runs)} runs, {len(report['done'])} already done, {len(report['finished'])} "
          f"finished now, {len(report['failed'])} failed" + ("" if todo else " (nothing to do)"))
    for name, error in report["failed"].items():
        print(f"  failed {name}: {error.splitlines()[0]}", file=sys.stderr)
    for name in report["conflict"]:
        print(f"  skipped {name}: its directory holds a finished run of another config", file=sys.stderr)
    return 1 if report["failed"] or report["conflict"] else 0
