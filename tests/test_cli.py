"""Command line: train several seeds with manifests, plot them, reject bad input with exit status 2."""

from __future__ import annotations

import json

import pytest

from rfm_teach.cli import load_curves, main
from rfm_teach.envs import BANDIT_ID
from rfm_teach.results import validate_manifest


# Shorter warm-up and batch than the tiny preset's, so that 60 steps include updates.
TINY = ["--preset", "tiny", "--steps", "60", "--warmup-steps", "20", "--batch-size", "8", "--eval-every", "30",
        "--eval-episodes", "3", "--no-progress"]


def _train_args(out, *extra):
    return ["train", "--env", BANDIT_ID, *TINY, "--out", str(out), *extra]


def test_train_two_seeds_then_plot(tmp_path):
    out = tmp_path / "bandit"
    assert main(_train_args(out, "--seeds", "0", "1", "--algo", "rfm")) == 0
    for seed in (0, 1):
        run = out / f"seed_{seed}"
        manifest = validate_manifest(run)
        assert manifest["seeds"] == [seed] and manifest["extra"]["algo"] == "rfm"
        assert manifest["command"].startswith("rfm-teach train --env")
        assert set(manifest["files"]) == {"config.json", "log.csv"}
        assert json.loads((run / "config.json").read_text())["seed"] == seed
        assert (out / "checkpoints" / f"seed_{seed}.pt").exists()
    steps, values = load_curves(out)
    assert steps.tolist() == [30, 60] and values.shape == (2, 2)
    figure = tmp_path / "fig.png"
    assert main(["plot", str(out), str(out / "seed_0"), "-o", str(figure)]) == 0
    assert figure.stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [(["train", "--env", "NoSuchEnv-v0", "--preset", "tiny", "--out", "x"], "unknown env id"),
     (["train", "--env", "CartPole-v1", "--preset", "tiny", "--out", "x"], "Discrete action space"),
     (["train", "--env", BANDIT_ID, "--steps", "0", "--out", "x"], "total_steps"),
     (["train", "--env", BANDIT_ID, "--warmup-steps", "10", "--out", "x"], "batch_size"),
     (["train", "--env", BANDIT_ID, "--temperature", "-1", "--out", "x"], "temperature"),
     (["train", "--env", BANDIT_ID, "--seeds", "1", "1", "--out", "x"], "distinct"),
     (["train", "--env", BANDIT_ID, "--algo", "ppo", "--out", "x"], "invalid choice"),
     (["plot", "nowhere", "-o", "f.png"], "no log.csv")],
)
def test_bad_input_exits_with_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing was written before the error
