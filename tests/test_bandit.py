"""The online agent on the contextual bandit, judged on its raw policy against the exact pi* (not best-of-N).

Best-of-N return is no test of the actor: best-of-16 *uniform* samples scored by the exact reward already
beat E_pi*[r]. These tests score one raw policy sample per action, and how often it sits at the box
walls, against a uniform policy and against pi* ∝ exp(r / temperature), both computed exactly on a grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from rfm_teach.agent import Agent
from rfm_teach.envs import BANDIT_ID, ContextualBandit, bandit_reward
from rfm_teach.train import make_config, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bandit import evaluate_agent  # noqa: E402

TEMPERATURE = 0.2


def _uniform() -> tuple[float, float]:
    """Exact E[r] and wall fraction (|a_j| > 0.95) of the uniform policy on [-1, 1]^2, averaged over contexts."""
    env = ContextualBandit()
    grid = env.exact_grid(0, TEMPERATURE)
    ret = sum(float(bandit_reward(q, grid.points).mean()) for q in env.landscapes) / len(env.landscapes)
    return ret, 0.05


def _train_and_score(tmp_path, steps: int, agent: dict) -> dict:
    config = make_config("tiny", env_id=BANDIT_ID, total_steps=steps, eval_every=steps, checkpoint_every=None,
                         device="cpu", agent={"temperature": TEMPERATURE, **agent})
    result = train(config, tmp_path / "run", progress=False)
    trained = Agent(3, 2, config.agent, seed=config.seed)
    trained.load_state_dict(torch.load(result["checkpoint"], weights_only=False)["agent"])
    rows = evaluate_agent(trained, TEMPERATURE, 1000, seed=0)
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def test_uniform_reference_is_exact():
    ret, wall = _uniform()
    assert 0.2 < ret < 0.3  # far below E_pi*[r] (about 0.75 at temperature 0.2)
    assert ContextualBandit().boltzmann_return(TEMPERATURE) > 2.5 * ret
    assert wall == pytest.approx(1 - 0.95, abs=1e-12)


def test_short_rfm_run_raw_policy_beats_uniform_off_the_walls(tmp_path):
    """1200 steps of the tiny preset (under a minute on one CPU thread): the raw policy already beats
    a uniform policy by a clear margin and puts no more of its coordinates at the walls than pi* allows (2x)."""
    score = _train_and_score(tmp_path, 1200, {})
    uniform_return, _ = _uniform()
    assert score["raw_return"] > uniform_return + 0.1, score
    assert score["wall"] <= 2 * score["wall_pi"], score


@pytest.mark.slow
def test_one_seed_of_the_bandit_command_is_near_the_bar(tmp_path):
    """The bandit command (tiny preset, 3000 steps, temperature 0.2), seed 0, retrained here: wall fraction
    <= 2x pi*'s and raw return >= 85 % of E_pi*[r]. The bar itself (>= 90 %) is a mean over five seeds,
    too long to retrain in CI; test_stored_bandit_study_meets_the_bar checks it on the stored runs
    (seed 0 there: 89 %, the five: 89-94 %)."""
    score = _train_and_score(tmp_path, 3000, {})
    assert score["wall"] <= 2 * score["wall_pi"], score
    assert score["raw_return"] >= 0.85 * score["return_pi"], score


def test_stored_bandit_study_meets_the_bar():
    """The five stored seeds of the bandit command (benchmarks/bandit.py, learned critic): mean raw return
    >= 90 % of E_pi*[r] and wall fraction <= 2x pi*'s, for the library's default RFM agent."""
    import csv

    from rfm_teach.results import RESULTS_DIR, validate_manifest

    run = RESULTS_DIR / "bandit" / "seeds5_tiny_steps3000_T0.2" / "rfm"
    manifest = validate_manifest(run)
    assert manifest["seeds"] == [0, 1, 2, 3, 4] and manifest["extra"]["steps"] == 3000
    assert manifest["extra"]["temperature"] == TEMPERATURE and manifest["extra"]["preset"] == "tiny"
    (row,) = [r for r in csv.DictReader(open(run / "summary.csv")) if r["critic"] == "learned"]
    assert float(row["raw_return_mean"]) >= 0.9 * float(row["return_pi_mean"]), row
    assert float(row["wall_mean"]) <= 2 * float(row["wall_pi_mean"]), row


@pytest.mark.parametrize("t", [0.05, 0.3, 0.6, 0.85])
def test_bandit_posterior_matches_quadrature_on_a_fine_grid(t):
    """BanditPosterior's two grids against an independent 801^2 ExactGrid of each context's latent target."""
    from functools import partial

    from rfm_teach.envs import BanditPosterior
    from rfm_teach.paths import LinearFlow
    from rfm_teach.targets import Boltzmann, ExactGrid

    path, env = LinearFlow(), ContextualBandit()
    oracle = BanditPosterior(TEMPERATURE)
    g = torch.Generator().manual_seed(1)
    u_t = t * 1.5 * torch.randn(6, 2, generator=g, dtype=torch.float64) + (1 - t) * torch.randn(6, 2, generator=g,
                                                                                                 dtype=torch.float64)
    tt = torch.full((6,), t, dtype=torch.float64)
    for c, q in enumerate(env.landscapes):
        obs = torch.zeros(6, 3, dtype=torch.float64)
        obs[:, c] = 1.0
        grid = ExactGrid(Boltzmann(partial(bandit_reward, q), TEMPERATURE, squash=True), extent=8.0, n=801)
        torch.testing.assert_close(oracle(obs, u_t, tt, path), grid.posterior_mean(u_t, tt[:, None], path),
                                   atol=5e-3, rtol=0)


def test_exact_target_agent_regresses_onto_the_exact_posterior():
    """exact_target=True: the update runs without an estimate (no ESS, no c) and the actor's target is finite."""
    from rfm_teach.agent import AgentConfig

    with pytest.raises(ValueError, match="exact_target=True needs algo='rfm', exact_q='bandit'"):
        AgentConfig(exact_target=True).validate()
    g = torch.Generator().manual_seed(2)
    obs = torch.eye(3)[torch.randint(0, 3, (8,), generator=g)]
    batch = {"obs": obs, "action": torch.rand(8, 2, generator=g) * 2 - 1, "reward": torch.rand(8, generator=g),
             "next_obs": obs, "mask": torch.zeros(8)}
    infos = {}
    for exact_target in (False, True):
        config = make_config("tiny", env_id=BANDIT_ID, agent={"temperature": TEMPERATURE, "exact_q": "bandit",
                                                              "exact_target": exact_target})
        infos[exact_target] = Agent(3, 2, config.agent, seed=0).update(batch)
    assert torch.isfinite(torch.as_tensor(infos[False]["ess"])) and torch.isnan(torch.as_tensor(infos[True]["ess"]))
    assert torch.isfinite(torch.as_tensor(infos[True]["actor_loss"]))
