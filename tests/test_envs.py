"""Environments: the contextual bandit's exact answers, MuJoCo v5 rescaling and silence, DMC, bad ids."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from rfm_teach.envs import BANDIT_ID, BANDIT_LANDSCAPES, ContextualBandit, bandit_reward, make_env


def test_bandit_is_a_one_step_contextual_env():
    env = make_env(BANDIT_ID, seed=3)
    assert env.observation_space.shape == (len(BANDIT_LANDSCAPES),)
    assert env.action_space.shape == (2,)
    seen = set()
    for _ in range(30):
        obs, info = env.reset()
        assert obs.sum() == 1.0 and obs[info["context"]] == 1.0
        seen.add(info["context"])
        action = np.array([0.3, -0.4], dtype=np.float32)
        _, reward, terminated, truncated, _ = env.step(action)
        assert terminated and not truncated
        expected = float(bandit_reward(BANDIT_LANDSCAPES[info["context"]], torch.tensor(action, dtype=torch.float64)))
        assert reward == pytest.approx(expected, rel=1e-6)
    assert seen == set(range(len(BANDIT_LANDSCAPES)))


def test_bandit_seeding_is_reproducible():
    first, second = make_env(BANDIT_ID, seed=5), make_env(BANDIT_ID, seed=5)
    assert [first.reset()[1]["context"] for _ in range(10)] == [second.reset()[1]["context"] for _ in range(10)]


def test_boltzmann_return_is_the_derivative_of_the_log_normaliser():
    """E_pi*[r] = d log Z(beta) / d beta with beta = 1 / temperature: ties the two exact answers together."""
    bandit = ContextualBandit()
    temperature, h = 0.1, 1e-3
    beta = 1.0 / temperature
    log_z = [np.mean([bandit.exact_grid(c, 1.0 / b).log_normaliser for c in range(3)]) for b in (beta + h, beta - h)]
    derivative = (log_z[0] - log_z[1]) / (2 * h)
    assert bandit.boltzmann_return(temperature) == pytest.approx(derivative, rel=1e-5)


def test_boltzmann_return_interpolates_uniform_and_greedy():
    bandit = ContextualBandit()
    greedy = bandit.max_return()
    cold, warm, hot = (bandit.boltzmann_return(t) for t in (0.02, 0.1, 100.0))
    uniform = float(np.mean([bandit.exact_grid(c, 1.0).log_p.mean() for c in range(3)]))  # log_p = r at temperature 1
    assert greedy >= cold > warm > hot
    assert hot == pytest.approx(uniform, rel=1e-2)
    assert greedy == pytest.approx(1.0, abs=0.02)  # each landscape peaks at r ≈ 1


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Humanoid-v5"])
def test_mujoco_actions_are_rescaled_and_silent(env_id, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    env = make_env(env_id, seed=0)
    assert np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)
    raw = env.unwrapped.action_space
    obs, _ = env.reset(seed=0)
    _, reward, *_ = env.step(np.ones(env.action_space.shape, dtype=np.float32))
    assert obs.shape == env.observation_space.shape and math.isfinite(reward)
    np.testing.assert_allclose(env.unwrapped.data.ctrl, raw.high, rtol=1e-6)  # a = 1 is the env's upper bound
    env.close()
    assert not os.path.exists(tmp_path / "MUJOCO_LOG.TXT")
    assert "settotalmass" not in capfd.readouterr().err


def test_unknown_and_non_box_envs_fail_early():
    with pytest.raises(ValueError, match="unknown env id"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env("CartPole-v1")
    with pytest.raises(ValueError, match="seed"):
        make_env(BANDIT_ID, seed=-1)
    with pytest.raises(ValueError, match="landscapes"):
        ContextualBandit(landscapes=())


def _dmc_available() -> str | None:
    try:
        make_env("cartpole-swingup", seed=0).close()
    except ValueError as err:
        return str(err)
    return None


def test_dmc_task_is_flat_and_rescaled():
    reason = _dmc_available()
    if reason is not None:
        pytest.skip(f"DeepMind Control not usable here: {reason}")
    env = make_env("cartpole-swingup", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1 and np.allclose(env.action_space.high, 1)
    env.close()
