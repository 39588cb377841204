"""Stored results: small files shipped inside the package, each run directory with a ``manifest.json``.

A run directory ``rfm_teach/results/<experiment>/<run_id>/`` holds a few small files (CSV curves,
~200 points per seed) and one manifest that says how they were made::

    {
      "schema_version": 1,
      "run_id": "...",                     # the directory name
      "command": "python benchmarks/...",  # exactly what was run
      "seeds": [0, 1, 2],
      "git": {"commit": "<sha>" | null, "dirty": true | false | null},
      "versions": {"python": ..., "torch": ..., "numpy": ..., "cuda": ... | null,
                   "gymnasium": ... | null, "mujoco": ... | null, "rfm_teach": ...},
      "device": {"type": "cpu" | "cuda", "name": ..., "threads": int, "platform": ...},
      "date_utc": "2026-11-27T22:40:00+00:00",
      "wall_time_s": float | null,
      "files": {"curves.csv": "<sha256>", ...},   # every file in the directory except the manifest
      "extra": {...}                               # anything experiment-specific (JSON-serialisable)
    }

Book tables and figures are generated from these files via :func:`load_manifest`, never typed.
``dirty`` ignores the run directory itself (its files are new by construction); commit the code
first, then run, so that ``commit`` names the code that made the numbers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Iterable

__all__ = [
    "RESULTS_DIR",
    "MANIFEST",
    "SCHEMA_VERSION",
    "REQUIRED_KEYS",
    "sha256_file",
    "git_state",
    "commit_label",
    "environment_versions",
    "device_info",
    "write_manifest",
    "load_manifest",
    "validate_manifest",
    "find_runs",
]

RESULTS_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "run_id": str,
    "command": str,
    "seeds": list,
    "git": dict,
    "versions": dict,
    "device": dict,
    "date_utc": str,
    "wall_time_s": (int, float, type(None)),
    "files": dict,
    "extra": dict,
}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(exclude: str | os.PathLike | None = None) -> dict:
    """{"commit": HEAD sha or None, "dirty": uncommitted changes outside ``exclude`` (or None if no git)}."""
    cwd = RESULTS_DIR
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"commit": None, "dirty": None}
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    spec = ["--", "."]
    if exclude is not None and top is not None:
        try:
            rel = Path(exclude).resolve().relative_to(Path(top.strip()).resolve())
            spec.append(f":(exclude){rel.as_posix()}")
        except ValueError:  # the run directory lies outside the repository
            pass
    status = _git(["status", "--porcelain", *spec], Path(top.strip()) if top else cwd)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def commit_label(git: dict) -> str:
    """A :func:`git_state` as a short label for tables: ``"abc1234"``, ``"abc1234+dirty"`` or ``"unknown"``."""
    return f"{(git['commit'] or 'unknown')[:7]}{'+dirty' if git['dirty'] else ''}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_versions() -> dict:
    """Versions of python and the packages that shape results (None where not installed)."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "cuda": torch.version.cuda,
        "gymnasium": _version("gymnasium"),
        "mujoco": _version("mujoco"),
        "rfm_teach": _version("rfm_teach"),
    }


def device_info(device: str | None = None) -> dict:
    """What ran the job: "cpu" or "cuda", the device name, torch's CPU threads and the platform."""
    import torch

    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = str(kind).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = platform.processor() or platform.machine()
    return {"type": kind, "name": name, "threads": torch.get_num_threads(), "platform": platform.platform()}


def _data_files(run_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts
    )


def write_manifest(
    run_dir: str | os.PathLike,
    *,
    command: str | Iterable[str],
    seeds: Iterable[int],
    extra: dict | None = None,
    wall_time_s: float | None = None,
    device: str | None = None,
) -> dict:
    """Write ``run_dir/manifest.json`` describing the files already in ``run_dir``; return the manifest.

    Args:
        run_dir: the run directory (its name is the run id); write the data files first.
        command: the command line, as a string or an argv list (joined with spaces).
        seeds: the seeds used.
        extra: experiment-specific facts (env id, steps, evaluation protocol ...), JSON-serialisable.
        wall_time_s: the run's wall time in seconds.
        device: "cpu" or "cuda" (default: cuda if available).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir must be an existing directory holding the run's files; got {str(run_dir)!r}")
    if not isinstance(command, str):
        command = " ".join(str(c) for c in command)
    seeds = list(seeds)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise TypeError(f"seeds must be ints; got {seeds!r}")
    extra = {} if extra is None else dict(extra)
    if wall_time_s is not None and not (float(wall_time_s) >= 0):
        raise ValueError(f"wall_time_s must be >= 0 or None; got {wall_time_s!r}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_dir.name,
        "command": command,
        "seeds": seeds,
        "git": git_state(exclude=run_dir),
        "versions": environment_versions(),
        "device": device_info(device),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        "files": {name: sha256_file(run_dir / name) for name in _data_files(run_dir)},
        "extra": extra,
    }
    text = json.dumps(manifest, indent=2, sort_keys=False)  # raises TypeError on non-serialisable extra
    (run_dir / MANIFEST).write_text(text + "\n")
    return manifest


def validate_manifest(run_dir_or_manifest: str | os.PathLike | dict, run_dir: str | os.PathLike | None = None) -> dict:
    """Check a manifest's schema and provenance; return it. Raises ValueError naming the first problem.

    Given a directory, also checks that every file in it is listed and that every listed file exists
    with the recorded SHA-256 (so a hand-edited CSV fails).
    """
    if isinstance(run_dir_or_manifest, dict):
        manifest = run_dir_or_manifest
    else:
        run_dir = Path(run_dir_or_manifest)
        path = run_dir / MANIFEST
        if not path.is_file():
            raise ValueError(f"no {MANIFEST} in {str(run_dir)!r}")
        manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"a manifest must be a JSON object; got {type(manifest).__name__}")
    for key, kind in REQUIRED_KEYS.items():
        if key not in manifest:
            raise ValueError(f"manifest lacks the key {key!r}")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool) and kind is int:
            raise ValueError(f"manifest[{key!r}] has type {type(manifest[key]).__name__}; expected {kind}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {manifest['schema_version']} is not {SCHEMA_VERSION}")
    if not manifest["command"].strip():
        raise ValueError("manifest['command'] is empty")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in manifest["seeds"]):
        raise ValueError(f"manifest['seeds'] must be a list of ints; got {manifest['seeds']!r}")
    git = manifest["git"]
    if set(git) != {"commit", "dirty"}:
        raise ValueError(f"manifest['git'] must have keys commit and dirty; got {sorted(git)}")
    if git["commit"] is not None and not (isinstance(git["commit"], str) and len(git["commit"]) == 40):
        raise ValueError(f"manifest['git']['commit'] must be a 40-hex sha or null; got {git['commit']!r}")
    if git["dirty"] not in (True, False, None):
        raise ValueError(f"manifest['git']['dirty'] must be true, false or null; got {git['dirty']!r}")
    for key in ("python", "torch"):
        if not isinstance(manifest["versions"].get(key), str):
            raise ValueError(f"manifest['versions'] must name the {key} version")
    if manifest["device"].get("type") not in ("cpu", "cuda", "mps"):
        raise ValueError(f"manifest['device']['type'] must be cpu, cuda or mps; got {manifest['device'].get('type')!r}")
    try:
        _dt.datetime.fromisoformat(manifest["date_utc"])
    except ValueError as err:
        raise ValueError(f"manifest['date_utc'] is not an ISO date: {manifest['date_utc']!r}") from err
    if not manifest["files"]:
        raise ValueError("manifest['files'] is empty: a run must store at least one file")
    if run_dir is not None:
        run_dir = Path(run_dir)
        if manifest["run_id"] != run_dir.name:
            raise ValueError(f"run_id {manifest['run_id']!r} does not match the directory name {run_dir.name!r}")
        listed, present = set(manifest["files"]), set(_data_files(run_dir))
        if present - listed:
            raise ValueError(f"files not in the manifest: {sorted(present - listed)}")
        if listed - present:
            raise ValueError(f"files in the manifest but missing: {sorted(listed - present)}")
        for name, digest in manifest["files"].items():
            if sha256_file(run_dir / name) != digest:
                raise ValueError(f"{name}: SHA-256 differs from the manifest (file changed after the run)")
    return manifest


def load_manifest(run_dir: str | os.PathLike, *, validate: bool = True) -> dict:
    """Read ``run_dir/manifest.json`` (validated against the files by default) and add ``"path"``."""
    run_dir = Path(run_dir)
    manifest = validate_manifest(run_dir) if validate else json.loads((run_dir / MANIFEST).read_text())
    return {**manifest, "path": str(run_dir)}


def find_runs(experiment: str | None = None, root: str | os.PathLike | None = None) -> list[Path]:
    """Run directories (those holding a manifest) under ``root`` (default: this package's results),
    optionally only those of one experiment folder, sorted by path."""
    root = RESULTS_DIR if root is None else Path(root)
    base = root / experiment if experiment else root
    return sorted(p.parent for p in base.rglob(MANIFEST))


def _main() -> int:
    """Validate every stored run; used by ``python -m rfm_teach.results``."""
    runs = find_runs()
    for run in runs:
        validate_manifest(run)
        print(f"ok {run.relative_to(RESULTS_DIR)}")
    print(f"{len(runs)} run(s) valid")
    return 0
