"""Command line: flags generated from the configs, manifests, plots, and bad input with exit status 2."""

from __future__ import annotations

import json
from dataclasses import fields

import matplotlib
import pytest

from rfm_teach.agent import AgentConfig
from rfm_teach.cli import help_text, load_curves, main, plot_runs
from rfm_teach.envs import BANDIT_ID
from rfm_teach.plotting import ESTIMATOR_STYLE, run_styles
from rfm_teach.results import validate_manifest
from rfm_teach.train import TrainConfig, make_config, train

# Shorter warm-up and batch than the tiny preset's, so that 60 steps include updates.
TINY = ["--preset", "tiny", "--steps", "60", "--warmup-steps", "20", "--batch-size", "8", "--eval-every", "30",
        "--eval-episodes", "3", "--no-progress"]
# The same run as a config built in Python (what a notebook does).
TINY_CONFIG = {"total_steps": 60, "warmup_steps": 20, "batch_size": 8, "eval_every": 30, "eval_episodes": 3}


def _train_args(out, *extra):
    return ["train", "--env", BANDIT_ID, *TINY, "--out", str(out), *extra]


def test_help_lists_every_config_field_with_its_docstring():
    text = help_text("train")
    for f in fields(TrainConfig):
        if f.name != "agent":
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    for f in fields(AgentConfig):  # read from the dataclass: fields added later appear by themselves
        assert f"--agent.{f.name.replace('_', '-')}" in text, f.name
    assert "importance draws per posterior estimate" in text  # AgentConfig.K's docstring is the help
    assert "examples:" in text and "--preset" in text and "--threads" in text


def test_every_field_is_a_flag_and_short_forms_still_work(tmp_path):
    out = tmp_path / "run"
    assert main(_train_args(out, "--algo", "rfm", "--agent.K", "5", "--agent.particles", "3", "--agent.hidden", "16",
                            "--temperature", "0.2", "--agent.cv", "plugin", "--threads", "1")) == 0
    config = json.loads((out / "seed_0" / "config.json").read_text())
    assert (config["agent"]["K"], config["agent"]["particles"], config["agent"]["hidden"]) == (5, 3, 16)
    assert config["agent"]["cv"] == "plugin" and config["agent"]["temperature"] == 0.2
    assert config["total_steps"] == 60 and config["agent"]["emb_dim"] == 32  # the rest from the tiny preset
    manifest = validate_manifest(out / "seed_0")
    assert manifest["extra"]["config"] == config and manifest["device"]["threads"] == 1


def test_train_two_seeds_then_plot(tmp_path):
    out = tmp_path / "bandit"
    assert main(_train_args(out, "--seeds", "0", "1", "--algo", "rfm")) == 0
    for seed in (0, 1):
        run = out / f"seed_{seed}"
        manifest = validate_manifest(run)
        assert manifest["seeds"] == [seed] and manifest["extra"]["algo"] == "rfm" and manifest["extra"]["finished"]
        assert manifest["command"].startswith("rfm-teach train --env")
        assert set(manifest["files"]) == {"config.json", "log.csv"}
        assert json.loads((run / "config.json").read_text())["seed"] == seed
    assert (out / "checkpoints" / "seeds_0_1.pt").exists()  # the two seeds trained as one batched agent
    # --resume continues the batch from its checkpoint (a larger --steps)
    assert main(_train_args(out, "--seeds", "0", "1", "--algo", "rfm", "--resume", "--steps", "90")) == 0
    assert load_curves(out)[0].tolist() == [30, 60, 90]
    steps, values = load_curves(out)
    assert steps.tolist() == [30, 60, 90] and values.shape == (2, 3)
    for stat in ("mean", "iqm"):
        figure = tmp_path / f"fig_{stat}.png"
        assert main(["plot", str(out), str(out / "seed_0"), "-o", str(figure), "--stat", stat]) == 0
        assert figure.stat().st_size > 0


def test_plot_the_wall_fraction_with_bands_inside_zero_one(tmp_path):
    # the stored HalfCheetah runs log wall_raw; a fraction's band is clipped to [0, 1] whatever the env
    import matplotlib.pyplot as plt

    from rfm_teach.results import RESULTS_DIR

    runs = [RESULTS_DIR / "halfcheetah" / name for name in ("rfm", "rfm_paper")]
    figure = tmp_path / "walls.png"
    assert main(["plot", *map(str, runs), "-o", str(figure), "--metric", "wall_raw", "--stat", "iqm"]) == 0
    assert figure.stat().st_size > 0
    ax = plot_runs(runs, metric="wall_raw", stat="mean")
    for band in ax.collections:
        y = band.get_paths()[0].vertices[:, 1]
        assert 0.0 <= y.min() <= y.max() <= 1.0
    assert "|a_j| > 0.95" in ax.get_ylabel()
    plt.close(ax.figure)


def test_a_run_from_python_writes_the_same_manifest_as_the_cli(tmp_path):
    assert main(_train_args(tmp_path / "cli")) == 0
    config = make_config("tiny", env_id=BANDIT_ID, **TINY_CONFIG)
    train(config, tmp_path / "py" / "seed_0", progress=False)
    a, b = validate_manifest(tmp_path / "cli" / "seed_0"), validate_manifest(tmp_path / "py" / "seed_0")
    assert a["extra"] == b["extra"] and a["extra"]["config"] == config.to_dict()
    assert a["seeds"] == b["seeds"] and a["versions"] == b["versions"] and set(a["files"]) == set(b["files"])
    assert a["files"]["config.json"] == b["files"]["config.json"]
    assert b["command"].startswith("python: rfm_teach.train.train")


def test_default_out_is_a_run_directory_and_resume_needs_a_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", BANDIT_ID, *TINY]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("ContextualBandit-v0_rfm_") and validate_manifest(run / "seed_0")
    # --resume continues the finished run (a larger --steps); with no checkpoint it is an error.
    assert main(["train", "--env", BANDIT_ID, *TINY[:-1], "--steps", "90", "--resume", "--out", str(run)]) == 0
    assert load_curves(run)[0].tolist() == [30, 60, 90]
    with pytest.raises(SystemExit) as info:
        main(["train", "--env", BANDIT_ID, *TINY, "--resume", "--out", str(tmp_path / "new")])
    assert info.value.code == 2 and "--resume: no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_run_styles_never_share_a_colour():
    styles = run_styles(["auto", "auto", "sac", None, "sac", "plugin"])
    colours = [s["color"] for s in styles]
    assert len(set(colours)) == len(colours)
    assert colours[0] == ESTIMATOR_STYLE["auto"]["color"] and colours[2] == ESTIMATOR_STYLE["sac"]["color"]
    assert all(matplotlib.colors.is_color_like(c) for c in colours)


@pytest.mark.parametrize(
    "argv, message",
    [(["train", "--env", "NoSuchEnv-v0", "--preset", "tiny", "--out", "x"], "unknown env id"),
     (["train", "--env", "CartPole-v1", "--preset", "tiny", "--out", "x"], "Discrete action space"),
     (["train", "--env", BANDIT_ID, "--steps", "-5", "--out", "x"], "--steps must be an int >= 1; got -5"),
     (["train", "--env", BANDIT_ID, "--preset", "tiny", "--steps", "100", "--out", "x"], "--steps (100) must exceed --warmup-steps (256)"),
     (["train", "--env", BANDIT_ID, "--warmup-steps", "10", "--out", "x"], "--batch-size (256) must not exceed --warmup-steps (10)"),
     (["train", "--env", BANDIT_ID, "--temperature", "-1", "--out", "x"], "--agent.temperature must be"),
     (["train", "--env", BANDIT_ID, "--agent.K", "0", "--out", "x"], "--agent.K must be an int >= 1"),
     (["train", "--env", BANDIT_ID, "--seeds", "1", "1", "--out", "x"], "distinct"),
     (["train", "--env", BANDIT_ID, "--seed", "1", "--seeds", "2", "3", "--out", "x"], "either --seed or --seeds"),
     (["train", "--env", BANDIT_ID, "--algo", "ppo", "--out", "x"], "--agent.algo must be one of"),
     (["train", "--env", BANDIT_ID, "--threads", "0", "--preset", "tiny", "--out", "x"], "--threads must be an int >= 1"),
     (["train", "--env", BANDIT_ID, "--preset", "huge", "--out", "x"], "--preset must be one of"),
     (["train", "--env", BANDIT_ID, "--preset", "tiny", "--resume"], "--resume needs --out"),
     (["train", "--env", BANDIT_ID, "--preset", "tiny", "--out", "/proc/x"], "--out: cannot create directory '/proc/x'"),
     (["train", "--env", BANDIT_ID, "--preset", "tiny", "--out", "afile/run"], "--out: 'afile' is a file"),
     (["plot", "nowhere", "-o", "f.png"], "no log.csv"),
     (["plot", "nowhere", "-o", "nodir/x.png"], "-o/--output: directory 'nodir' does not exist"),
     (["fly"], "unknown command 'fly'")],
)
def test_bad_input_exits_with_status_2_and_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("in the way\n")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()  # nothing was written before the error


def test_unknown_flag_names_the_generated_one(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--env", BANDIT_ID, "--K", "3"])
    assert info.value.code == 2 and "--agent.K" in capsys.readouterr().err
