"""benchmarks/actor_fit.py: a trained actor against the exact Boltzmann policy of its own critic."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from rfm_teach.agent import Agent
from rfm_teach.seeds import SeedGenerators
from rfm_teach.train import make_config, train_seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import actor_fit  # noqa: E402
import reeval  # noqa: E402


@pytest.fixture(scope="module")
def rfm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("actor_fit") / "rfm"
    config = make_config("tiny", env_id="Pendulum-v1", total_steps=300, warmup_steps=200, eval_every=300,
                         eval_episodes=2, agent={"particles": 4, "K": 8})
    train_seeds(config, [0, 1], out, progress=False)
    return out


def test_policy_rows_are_the_reevaluation_rows(rfm_run):
    """"raw" and "argmax" use the generators of benchmarks/reeval.py, so they reproduce its rows exactly;
    the two grid modes are other ways of acting, and the fit has one row per kept state and seed."""
    _, returns, fit, targets = actor_fit.measure(rfm_run, episodes=2, fit_starts=1, every=100, samples=64, n=33, bins=8,
                                                 target_states=1, times=(0.5,), latent_n=101)
    _, rows = reeval.reevaluate(rfm_run, episodes=2)
    for mode in ("raw", "argmax"):
        mine = [(r["seed"], r["start"], r["return"]) for r in returns if r["mode"] == mode]
        theirs = [(r["seed"], r["start"], r["return"]) for r in rows if r["mode"] == mode]
        assert mine == theirs
    assert {r["mode"] for r in returns} == set(actor_fit.MODES)
    assert [(r["seed"], r["start"], r["step"]) for r in fit] == [(0, 0, 0), (0, 0, 100), (1, 0, 0), (1, 0, 100)]
    assert all(r["tv_floor"] < r["tv"] for r in fit)  # 300 steps have not taught the actor its target
    assert [(r["seed"], r["start"], r["step"], r["particles"]) for r in targets] == [
        (0, 0, 0, "actor"), (0, 0, 0, "exact"), (1, 0, 0, "actor"), (1, 0, 0, "exact")]


def test_an_actor_that_samples_its_exact_target_scores_the_floor(rfm_run):
    """The measure reads what it claims: with the actor's samples replaced by exact samples of its target
    (through atanh, as latents), TV and sliced W2 fall to the floor's size, the mean shift to noise and the
    value the actor gives up to about zero; the trained actor's numbers are far from that."""
    _, agent, _, _ = reeval.load_agent(rfm_run)
    states = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, -2.0]], [[-1.0, 0.0, 0.0], [0.6, 0.8, 3.0]]])
    kwargs = dict(samples=2048, n=65, bins=16)
    trained = actor_fit.fit_rows(agent, states, gens=SeedGenerators([0, 1]), **kwargs)
    critics, lams = actor_fit.seed_critics(agent), actor_fit.temperatures(agent)
    exact = [actor_fit.exact_policy(critics[s], states[s, f], lams[s], 65) for s in range(2) for f in range(2)]
    gen = torch.Generator().manual_seed(5)

    def exact_latents(obs, n, gens):
        return torch.stack([torch.atanh(g.sample(n, gen).clamp(-0.999999, 0.999999)).float() for g in exact])

    agent._latents = exact_latents
    perfect = actor_fit.fit_rows(agent, states, gens=SeedGenerators([0, 1]), **kwargs)
    for p, t in zip(perfect, trained):
        assert p["tv"] < 2 * p["tv_floor"] + 0.02 < t["tv"]
        assert p["sw2"] < 2 * p["sw2_floor"] + 0.01 < t["sw2"]
        assert abs(p["value_gap"]) < 0.05 * t["value_gap"] + 1e-3
        assert p["mean_shift"] < 0.1 * p["target_spread"]
        assert p["actor_spread"] == pytest.approx(p["target_spread"], rel=0.1)


def test_grid_actor_samples_the_target_and_takes_its_maximiser(rfm_run):
    """"target" draws exact samples (their mean is the grid's mean), "greedy" the critic's largest Q."""
    _, agent, _, _ = reeval.load_agent(rfm_run)
    actor = actor_fit.GridActor(agent, n=65)
    obs = torch.tensor([0.3, -0.95, 1.0]).expand(2, 4000, 3)
    gens = SeedGenerators([3, 4])
    samples = actor.act(obs, "target", gens)
    greedy = actor.act(obs[:, :1], "greedy", gens)
    for s in range(2):
        grid = actor_fit.exact_policy(actor.critics[s], obs[s, 0], actor.temperatures[s], 65)
        spread = float(actor_fit.spread(grid))
        assert float((samples[s].double().mean(0) - grid.mean()).norm()) < 5 * spread / 4000**0.5 + 1e-3
        with torch.no_grad():
            q = actor.critics[s].q_min(obs[s, :1].expand(65, -1), grid.points.float())
            assert float(actor.critics[s].q_min(obs[s, :1], greedy[s])) == pytest.approx(float(q.max()), abs=1e-6)


def test_regression_target_moves_with_particles_that_are_off_target(rfm_run):
    """The third measurement reads what it claims. With plain self-normalised importance sampling (c = 0),
    exact particles in the proposal give an estimate better than one exact posterior draw that does not move
    along the offset; particles shifted by three of the target's spreads cost bias, and the estimate moves along
    the offset by a clear share of it ("lean"; which way depends on the landscape)."""
    _, agent, _, _ = reeval.load_agent(rfm_run)
    agent.config = dataclasses.replace(agent.config, cv="none", K=32, particles=16)
    states = torch.tensor([[[1.0, 0.0, 0.5]], [[0.0, 1.0, -2.0]]])
    critics, lams = actor_fit.seed_critics(agent), actor_fit.temperatures(agent)
    gen = torch.Generator().manual_seed(3)
    grids = [actor_fit.exact_policy(critics[s], states[s, 0], lams[s], 401, latent=True) for s in range(2)]
    spreads = [float(actor_fit.spread(g)) for g in grids]

    def shifted_latents(obs, n, gens):
        return torch.stack([(g.sample(n, gen) + 3 * sd).float() for g, sd in zip(grids, spreads)])

    agent._latents = shifted_latents
    rows = actor_fit.target_rows(agent, states, times=(0.1,), n=401, rows=20, reps=20, gens=SeedGenerators([0, 1]))
    by = {(r["seed"], r["particles"]): r for r in rows}
    for s in range(2):
        off, exact = by[s, "actor"], by[s, "exact"]
        assert abs(off["lean"]) > 0.1 and abs(exact["lean"]) < abs(off["lean"]) / 2
        assert off["bias2"] > 3 * exact["bias2"]
        assert exact["bias2"] + exact["variance"] < exact["posterior_var"]


def test_refit_on_a_frozen_critic_trains_only_the_actor_towards_its_target(rfm_run):
    """benchmarks/actor_refit.py: the pool comes from the newest transitions, the critic stays as it was, the
    exact bank samples the target, both arms start from the same measured checkpoint, a refit repeats
    exactly, and 200 updates with exact particles bring the actor closer to its target."""
    import actor_refit

    buffers = reeval._finished(rfm_run)[1]["buffers"]
    states = actor_refit.recent_states(buffers, 8)
    assert states.shape == (2, 8, 3)
    torch.testing.assert_close(states[:, -1], torch.stack([torch.as_tensor(b["obs"][b["size"] - 1]) for b in buffers]))
    with pytest.raises(ValueError, match="holds 300 transitions; --pool 301"):
        actor_refit.recent_states(buffers, 301)

    kwargs = dict(batch=32, fit_states=4, samples=256, n=65, bins=8, seeds=[0, 1])
    rows = {}
    for arm in ("actor", "exact", "exact"):
        _, agent, _, _ = reeval.load_agent(rfm_run)
        critic = {k: v.clone() for k, v in agent.critic.state_dict().items()}
        bank = actor_refit.exact_bank(agent, states, n=65, size=512, seeds=[0, 1]) if arm == "exact" else None
        rows.setdefault(arm, []).append(actor_refit.refit(agent, states, arm, measure=(0, 200), bank=bank, **kwargs))
        assert all(torch.equal(v, critic[k]) for k, v in agent.critic.state_dict().items())
    grid = actor_fit.exact_policy(actor_fit.seed_critics(agent)[1], states[1, 2], actor_fit.temperatures(agent)[1], 65)
    torch.testing.assert_close(torch.tanh(bank[8 + 2]).double().mean(0), grid.mean(), atol=0.05, rtol=0)
    assert rows["exact"][0] == rows["exact"][1]
    (actor,), (exact, _) = rows["actor"], rows["exact"]
    assert [r for r in actor if r["update"] == 0] == [{**r, "arm": "actor"} for r in exact if r["update"] == 0]

    def ratio(rows, update):
        return torch.tensor([r["sw2"] / r["sw2_floor"] for r in rows if r["update"] == update]).median()

    assert ratio(exact, 200) < ratio(exact, 0)


def test_a_fresh_actor_of_another_width_starts_as_a_new_run_on_the_same_frozen_critic(rfm_run):
    """actor_refit.fresh_actor: the width asked for, the initial weights of a fresh run with those seeds, and
    the checkpoint's critics and temperatures, which a refit then leaves as they were."""
    import actor_refit

    _, agent, _, _ = reeval.load_agent(rfm_run)
    fresh = actor_refit.fresh_actor(agent, 16, [0, 1])
    new_run = Agent(agent.obs_dim, agent.act_dim, dataclasses.replace(agent.config, hidden=16), seed=[0, 1])
    assert fresh.config.hidden == 16 and fresh.temperatures == agent.temperatures
    for mine, theirs in ((fresh.actor, new_run.actor), (fresh.critic, agent.critic),
                         (fresh.critic_target, agent.critic_target)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    critic = {k: v.clone() for k, v in fresh.critic.state_dict().items()}
    states = actor_refit.recent_states(reeval._finished(rfm_run)[1]["buffers"], 8)
    rows = actor_refit.refit(fresh, states, "actor", batch=32, measure=(0, 20), fit_states=2, samples=128, n=33,
                             bins=8, seeds=[0, 1])
    assert sorted({r["update"] for r in rows}) == [0, 20] and len(rows) == 2 * 2 * 2
    assert all(torch.equal(v, critic[k]) for k, v in fresh.critic.state_dict().items())
