"""Stored results: the manifest schema, tamper detection, and the provenance of every committed run."""

import json
import subprocess
from pathlib import Path

import pytest

from rfm_teach.results import RESULTS_DIR, find_runs, load_manifest, validate_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]


def make_run(tmp_path: Path, name: str = "run_a") -> Path:
    run = tmp_path / name
    (run / "sub").mkdir(parents=True)
    (run / "curves.csv").write_text("step,value\n0,1.0\n")
    (run / "sub" / "extra.csv").write_text("a\n1\n")
    return run


def test_write_then_load_round_trip(tmp_path):
    run = make_run(tmp_path)
    written = write_manifest(run, command=["python", "bench.py", "--x", "1"], seeds=[0, 1], extra={"env": "toy"},
                             wall_time_s=1.5)
    loaded = load_manifest(run)
    assert loaded["command"] == "python bench.py --x 1"
    assert loaded["seeds"] == [0, 1]
    assert set(loaded["files"]) == {"curves.csv", "sub/extra.csv"}
    assert loaded["extra"] == {"env": "toy"}
    assert loaded["run_id"] == "run_a"
    assert {k: v for k, v in loaded.items() if k != "path"} == written
    for key in ("python", "torch", "numpy"):
        assert isinstance(loaded["versions"][key], str)
    assert loaded["device"]["type"] in ("cpu", "cuda")


def test_tampering_is_detected(tmp_path):
    run = make_run(tmp_path)
    write_manifest(run, command="python bench.py", seeds=[0], extra={})
    (run / "curves.csv").write_text("step,value\n0,2.0\n")
    with pytest.raises(ValueError, match="SHA-256"):
        validate_manifest(run)


def test_unlisted_and_missing_files_are_detected(tmp_path):
    run = make_run(tmp_path)
    write_manifest(run, command="python bench.py", seeds=[0], extra={})
    (run / "late.csv").write_text("x\n")
    with pytest.raises(ValueError, match="not in the manifest"):
        validate_manifest(run)
    (run / "late.csv").unlink()
    (run / "curves.csv").unlink()
    with pytest.raises(ValueError, match="missing"):
        validate_manifest(run)


def test_schema_errors(tmp_path):
    run = make_run(tmp_path)
    manifest = write_manifest(run, command="python bench.py", seeds=[0], extra={})
    for key, bad, match in [("seeds", ["0"], "seeds"), ("command", " ", "command"), ("git", {"commit": "x"}, "git"),
                            ("date_utc", "yesterday", "ISO"), ("schema_version", 99, "schema_version")]:
        broken = dict(manifest, **{key: bad})
        with pytest.raises(ValueError, match=match):
            validate_manifest(broken)
    broken = dict(manifest)
    del broken["files"]
    with pytest.raises(ValueError, match="files"):
        validate_manifest(broken)
    with pytest.raises(ValueError, match="directory"):
        write_manifest(tmp_path / "absent", command="x", seeds=[0])
    with pytest.raises(TypeError, match="seeds"):
        write_manifest(run, command="x", seeds=[0.5])
    with pytest.raises(TypeError):
        write_manifest(run, command="x", seeds=[0], extra={"obj": object()})


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


RUNS = find_runs()


@pytest.mark.parametrize("run", RUNS, ids=[str(r.relative_to(RESULTS_DIR)) for r in RUNS])
def test_every_committed_run_has_a_valid_manifest(run):
    """Schema, file hashes and provenance of each stored run (a book table is only as good as this)."""
    manifest = validate_manifest(run)
    assert manifest["git"]["commit"] is not None, "stored runs must name the commit that produced them"
    assert manifest["wall_time_s"] is not None
    assert manifest["seeds"], "stored runs must list their seeds"
    inside = _git("rev-parse", "--is-inside-work-tree")
    shallow = _git("rev-parse", "--is-shallow-repository")
    if inside.returncode == 0 and shallow.stdout.strip() == "false":
        found = _git("cat-file", "-e", manifest["git"]["commit"] + "^{commit}")
        assert found.returncode == 0, f"commit {manifest['git']['commit']} is not in this repository's history"


def test_fixed_target_results_are_readable():
    """Each fixed-target run stores curves for every estimator its manifest lists, with each fit's full config."""
    import csv

    from rfm_teach.fixed_target import FitConfig

    fields = {f for f in FitConfig.__dataclass_fields__}
    for run in find_runs("fixed_target"):
        manifest = load_manifest(run)
        extra = manifest["extra"]
        assert extra["experiment"] == "fixed_target"
        with open(run / "curves.csv") as f:
            rows = list(csv.DictReader(f))
        assert {r["estimator"] for r in rows} == set(extra["estimators"])
        # runs made before FitConfig.mixture existed lack it (they sampled the joint-only mixture; notebook 06
        # lists them apart), those before FitConfig.adaptive_share lack that (fixed shares in every row);
        # every other field is there
        older = (fields - {"adaptive_share"}, fields - {"mixture", "adaptive_share"})
        assert extra["configs"] and all(set(c) in (fields, *older) for c in extra["configs"]), \
            "every fit's full FitConfig"
        assert len(extra["configs"]) == extra["finished_fits"]
        for r in rows:
            for key in ("sw", "mmd2", "tv"):
                float(r[key])  # every distance is a number
        with open(run / "final.csv") as f:
            assert len(list(csv.DictReader(f))) == extra["finished_fits"]


def test_bandit_study_summaries_recompute_from_their_runs():
    """Each stored bandit study's summary.csv is exactly benchmarks/bandit.py's summary of its runs.csv,
    with every seed its manifest lists and every context of the bandit (notebook 07 reads the summaries)."""
    import csv
    import math
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bandit import METRICS, summarise

    from rfm_teach.envs import BANDIT_LANDSCAPES

    runs = find_runs("bandit/seeds5_tiny_steps3000_T0.2")
    assert runs, "the five-seed bandit study is stored"
    for run in runs:
        manifest = load_manifest(run)
        with open(run / "runs.csv", newline="") as f:
            rows = [{**r, "seed": int(r["seed"]), **{m: float(r[m]) for m in METRICS}} for r in csv.DictReader(f)]
        assert sorted({r["seed"] for r in rows}) == manifest["seeds"]
        extra = manifest["extra"]  # one row per seed, context, critic and variant the run trained
        assert len(rows) == len(manifest["seeds"]) * len(BANDIT_LANDSCAPES) * len(extra["critics"]) * len(extra["variants"])
        with open(run / "summary.csv", newline="") as f:
            stored = list(csv.DictReader(f))
        for got, want in zip(summarise(rows), stored, strict=True):
            for key, value in got.items():
                if isinstance(value, float) and math.isnan(value):
                    assert want[key] == "nan"
                elif isinstance(value, float):
                    assert math.isclose(value, float(want[key]), rel_tol=1e-12, abs_tol=1e-15), (run.name, key)
                else:
                    assert str(value) == want[key], (run.name, key)


def test_commit_label_names_the_commit_and_a_dirty_tree():
    from rfm_teach.results import commit_label

    assert commit_label({"commit": "0123456789abcdef", "dirty": False}) == "0123456"
    assert commit_label({"commit": "0123456789abcdef", "dirty": True}) == "0123456+dirty"
    assert commit_label({"commit": None, "dirty": None}) == "unknown"
