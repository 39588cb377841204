"""Sweeps: the grid, run names and status without Ray; then real sweeps on a local Ray (no mocks)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from rfm_teach.cli import main
from rfm_teach.envs import BANDIT_ID
from rfm_teach.results import validate_manifest
from rfm_teach.sweep import grid, parse_grid, run_status, run_sweep
from rfm_teach.train import make_config, train

# A tiny budget: 300 steps, 100 of them warm-up, small networks.
SMALL = ["--preset", "tiny", "--steps", "300", "--warmup-steps", "100", "--batch-size", "32", "--eval-every", "150",
         "--eval-episodes", "3", "--agent.hidden", "32", "--agent.critic-hidden", "32", "--agent.K", "8",
         "--agent.particles", "4"]
BASE = {"env_id": BANDIT_ID, "total_steps": 60, "warmup_steps": 20, "batch_size": 8, "eval_every": 30,
        "eval_episodes": 2, "agent": {"hidden": 16, "critic_hidden": 16, "K": 4, "particles": 2}}


def test_parse_grid_types_values_by_field():
    g = parse_grid(["agent.K=16,64", "agent.cv=plugin,0.5", "checkpoint_every=None,100", "agent.temperature-mode=fixed"])
    assert g == {"agent.K": [16, 64], "agent.cv": ["plugin", 0.5], "checkpoint_every": [None, 100],
                 "agent.temperature_mode": ["fixed"]}
    for bad, match in ((["K=3"], "unknown field 'K'"), (["agent.K"], "FIELD=V1,V2"), (["agent.K=a"], "not a valid"),
                       (["agent.algo=rfm"], "own flag"), (["agent.nope=1"], "unknown field")):
        with pytest.raises(ValueError, match=match):
            parse_grid(bad)


def test_grid_is_the_full_product_with_distinct_names():
    base = make_config("tiny", env_id=BANDIT_ID)
    runs = grid(base, algos=["rfm", "sac"], seeds=[0, 1], fields={"agent.K": [16, 64]})
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    assert runs[0].name == "ContextualBandit-v0_rfm_K=16_seed0"
    assert {(r.config.agent.algo, r.config.agent.K, r.config.seed) for r in runs} == {
        (a, k, s) for a in ("rfm", "sac") for k in (16, 64) for s in (0, 1)}
    with pytest.raises(ValueError, match="K must be"):
        grid(base, fields={"agent.K": [0]})
    with pytest.raises(ValueError, match="distinct"):
        grid(base, seeds=[1, 1])


def test_run_status_done_resume_new_and_conflict(tmp_path):
    base = make_config("tiny", **BASE)
    (run,) = grid(base)
    assert run_status(run, tmp_path) == "new"
    train(run.config, tmp_path / run.name, stop_after=25, progress=False)  # stopped: a checkpoint, not finished
    assert run_status(run, tmp_path) == "resume"
    train(run.config, tmp_path / run.name, resume=True, progress=False)
    assert run_status(run, tmp_path) == "done"
    assert run_sweep([run], tmp_path) == {"done": [run.name], "finished": [], "failed": {}, "conflict": []}  # no Ray
    (other,) = grid(make_config("tiny", **{**BASE, "eval_episodes": 3}))
    assert other.name == run.name and run_status(other, tmp_path) == "conflict"
    (tmp_path / run.name / "log.csv").write_text("edited\n")  # a changed file: the manifest no longer holds
    assert run_status(run, tmp_path) == "resume"


def test_sweep_of_two_algos_and_two_seeds_on_a_local_ray(tmp_path, capsys):
    """The CLI starts a local Ray, runs 4 runs, leaves 4 directories with manifests; a second call has nothing to do."""
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    argv = ["sweep", "--env", BANDIT_ID, "--algo", "rfm", "sac", "--seeds", "0", "1", *SMALL, "--out", str(out),
            "--num-cpus", "2", "--no-progress"]
    assert main(argv) == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "checkpoints")
    assert [p.name for p in runs] == [f"ContextualBandit-v0_{a}_seed{s}" for a in ("rfm", "sac") for s in (0, 1)]
    for run in runs:
        manifest = validate_manifest(run)
        assert manifest["extra"]["finished"] and manifest["extra"]["steps"] == 300
        assert manifest["command"].startswith("rfm-teach sweep") and manifest["device"]["threads"] == 1
    assert json.loads((out / "sweep.json").read_text())["finished"]
    capsys.readouterr()
    assert main(argv) == 0  # no Ray is started when every run is done
    assert "4 already done, 0 finished now, 0 failed (nothing to do)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_run_is_reported_and_the_others_finish(tmp_path):
    pytest.importorskip("ray")
    base = make_config("tiny", **BASE)
    runs = grid(base, seeds=[0, 1])
    out = tmp_path / "sweep"
    out.mkdir()
    (out / runs[1].name).write_text("a file where the run directory should be\n")
    report = run_sweep(runs, out, num_cpus=2, progress=False)
    assert report["finished"] == [runs[0].name] and list(report["failed"]) == [runs[1].name]
    assert "FileExistsError" in report["failed"][runs[1].name] or "NotADirectoryError" in report["failed"][runs[1].name]
    validate_manifest(out / runs[0].name)


def test_dry_run_lists_the_runs_and_bad_grids_exit_2(tmp_path, capsys):
    argv = ["sweep", "--env", BANDIT_ID, "--algo", "rfm", "sac", "--seeds", "0", "1", *SMALL, "--out", str(tmp_path),
            "--grid", "agent.cv=plugin,auto"]
    assert main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.startswith("new") for line in lines)
    assert any("ContextualBandit-v0_rfm_cv=plugin_seed1" in line for line in lines)
    for bad, message in ((["--grid", "agent.K=0"], "--agent.K must be an int >= 1"),
                         (["--grid", "K=3"], "unknown field 'K'"), (["--env", "NoSuchEnv-v0"], "unknown env id")):
        with pytest.raises(SystemExit) as info:
            main(["sweep", *SMALL, *bad, "--out", str(tmp_path / "x"), "--dry-run"])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_plot_groups_the_seeds_of_a_sweep(tmp_path):
    from rfm_teach.cli import load_curves

    (run,) = grid(make_config("tiny", **BASE))
    for seed in (0, 1):
        train(replace(run.config, seed=seed), tmp_path / f"{run.name[:-len('_seed0')]}_seed{seed}", progress=False)
    steps, values = load_curves(tmp_path / run.name[: -len("_seed0")])
    assert steps.tolist() == [30, 60] and values.shape == (2, 2)
    assert main(["plot", str(tmp_path / run.name[: -len("_seed0")]), "-o", str(tmp_path / "f.svg")]) == 0
