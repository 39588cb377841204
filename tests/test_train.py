"""The online loop: config checks, buffer, exact resume, MuJoCo and DMC smoke runs (the bandit's learning tests are in test_bandit.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from rfm_teach.envs import BANDIT_ID, make_env
from rfm_teach.train import LOG_COLUMNS, PRESETS, ReplayBuffer, TrainConfig, make_config, resolve_device, train


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


def _same_run(config: TrainConfig, tmp_path, stop_after: int) -> None:
    """A run stopped at ``stop_after`` and resumed equals, row for row and weight for weight, an unbroken run."""
    whole = train(config, tmp_path / "whole", progress=False)
    first = train(config, tmp_path / "split", stop_after=stop_after, progress=False)
    assert first["step"] < config.total_steps
    resumed = train(config, tmp_path / "split", resume=True, progress=False)
    assert resumed["step"] == whole["step"] == config.total_steps
    rows = _rows(whole["log"])
    assert len(rows) >= 2 and rows == _rows(resumed["log"])
    a, b = torch.load(whole["checkpoint"], weights_only=False), torch.load(resumed["checkpoint"], weights_only=False)
    for part in ("actor", "critic", "critic_target"):
        for name, value in a["agent"][part].items():
            torch.testing.assert_close(value, b["agent"][part][name], rtol=0, atol=0, msg=f"{part}.{name}")
    torch.testing.assert_close(a["buffers"][0]["obs"], b["buffers"][0]["obs"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "overrides, match",
    [({"total_steps": 0}, "total_steps"), ({"batch_size": 512, "warmup_steps": 100}, "batch_size"),
     ({"device": "tpu"}, "device"), ({"agent": {"algo": "ppo"}}, "algo"), ({"checkpoint_every": 0}, "checkpoint_every"),
     ({"env_id": ""}, "env_id"), ({"buffer_size": 8}, "buffer_size"), ({"seed": -1}, "seed")],
)
def test_bad_config_raises_before_training(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config("tiny", **overrides)


def test_presets_and_round_trip():
    paper = make_config("paper")
    assert (paper.agent.K, paper.agent.particles, paper.agent.steps, paper.agent.t_min) == (100, 32, 10, 0.01)
    assert (paper.batch_size, paper.utd, paper.warmup_steps, paper.buffer_size) == (256, 1, 10_000, 250_000)
    assert (paper.agent.actor_lr, paper.agent.critic_lr, paper.agent.grad_clip, paper.agent.temperature) == (3e-4, 1e-3, 10.0, 0.02)
    tiny = make_config("tiny", env_id="HalfCheetah-v5", agent={"algo": "sac"})
    assert TrainConfig.from_dict(tiny.to_dict()) == tiny and tiny.agent.algo == "sac"
    assert set(PRESETS) == {"paper", "tiny"}
    with pytest.raises(ValueError, match="preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"lr": 1})
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_env_fails_before_any_step(tmp_path):
    with pytest.raises(ValueError, match="unknown env id"):
        train(make_config("tiny", env_id="NoSuchEnv-v0"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "log.csv").exists()


def test_train_writes_its_manifest_and_refuses_a_resume_with_no_checkpoint(tmp_path):
    from rfm_teach.results import validate_manifest

    config = make_config("tiny", env_id=BANDIT_ID, total_steps=60, warmup_steps=20, batch_size=8, eval_every=30,
                         eval_episodes=2, agent={"hidden": 16, "critic_hidden": 16, "K": 4, "particles": 2})
    with pytest.raises(ValueError, match="resume: no checkpoint"):
        train(config, tmp_path / "run", resume=True, progress=False)
    assert not (tmp_path / "run").exists()
    train(config, tmp_path / "run", stop_after=25, progress=False)
    manifest = validate_manifest(tmp_path / "run")
    assert not manifest["extra"]["finished"] and manifest["extra"]["steps"] < 60
    train(config, tmp_path / "run", resume=True, progress=False, command="my command")
    manifest = validate_manifest(tmp_path / "run")
    assert manifest["extra"]["finished"] and manifest["extra"]["config"] == config.to_dict()
    assert manifest["command"] == "my command" and set(manifest["files"]) == {"config.json", "log.csv"}


def test_a_run_no_longer_than_its_warm_up_warns(tmp_path):
    config = make_config("tiny", env_id=BANDIT_ID, total_steps=20, warmup_steps=20, batch_size=8, eval_every=20,
                         eval_episodes=2, agent={"hidden": 16, "critic_hidden": 16, "K": 4, "particles": 2})
    with pytest.warns(UserWarning, match="no update will run"):
        train(config, tmp_path / "run", progress=False)


def test_replay_buffer_wraps_and_round_trips():
    buf = ReplayBuffer(2, 1, capacity=4, seed=0, device=torch.device("cpu"))
    for i in range(6):
        buf.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i + 1), 1.0)
    assert buf.size == 4 and sorted(buf.reward.tolist()) == [2.0, 3.0, 4.0, 5.0]
    other = ReplayBuffer(2, 1, capacity=4, seed=99, device=torch.device("cpu"))
    other.load_state_dict(buf.state_dict())
    a, b = buf.sample(8), other.sample(8)
    assert all(torch.equal(a[k], b[k]) for k in a) and a["obs"].shape == (8, 2)


def test_bandit_run_resumes_exactly(tmp_path):
    config = make_config("tiny", env_id=BANDIT_ID, total_steps=120, warmup_steps=40, batch_size=16, eval_every=40,
                         eval_episodes=4, checkpoint_every=50,
                         agent={"hidden": 16, "critic_hidden": 16, "emb_dim": 8, "K": 8, "particles": 4, "steps": 3})
    _same_run(config, tmp_path, stop_after=70)
    rows = _rows(tmp_path / "whole" / "log.csv")
    assert [int(r["step"]) for r in rows] == [40, 80, 120] and list(rows[0]) == [c for c in LOG_COLUMNS if c != "wall_time_s"]
    assert rows[0]["critic_loss"] == "" and float(rows[-1]["ess"]) >= 1  # no updates during warm-up


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rfm", "sac"])
def test_halfcheetah_smoke_with_checkpoint_and_resume(tmp_path, algo):
    config = make_config("tiny", env_id="HalfCheetah-v5", total_steps=240, warmup_steps=80, eval_every=120,
                         eval_episodes=2, checkpoint_every=100, max_episode_steps=60,
                         agent={"algo": algo, "temperature_mode": "reward_scale", "K": 16, "particles": 8})
    _same_run(config, tmp_path, stop_after=100)
    rows = _rows(tmp_path / "whole" / "log.csv")
    assert all(np.isfinite(float(r["return_argmax"])) and np.isfinite(float(r["return_raw"])) for r in rows)
    assert all(0 <= float(r["wall_raw"]) <= 1 for r in rows)


def _dmc_reason() -> str | None:
    try:
        make_env("cartpole-swingup", seed=0).close()
    except ValueError as err:
        return str(err)
    return None


@pytest.mark.slow
def test_dmc_smoke_with_checkpoint_and_resume(tmp_path):
    reason = _dmc_reason()
    if reason is not None:
        pytest.skip(f"DeepMind Control not usable here: {reason}")
    config = make_config("tiny", env_id="cartpole-swingup", total_steps=200, warmup_steps=80, eval_every=100,
                         eval_episodes=2, checkpoint_every=100, max_episode_steps=50,
                         agent={"K": 16, "particles": 8})
    _same_run(config, tmp_path, stop_after=100)
