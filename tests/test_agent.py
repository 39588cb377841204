"""Agent: config checks, critic and particle choice, one update per algorithm, SAC log-probabilities, state
round-trip, the exact bandit critic, no global seeding and no host reads for validation in an update."""

from __future__ import annotations

import copy

import pytest
import torch

from rfm_teach.agent import ALGOS, Agent, AgentConfig, GaussianTanhPolicy, TwinCritic
from rfm_teach.envs import BANDIT_LANDSCAPES, BanditQ, bandit_reward


SMALL = {"hidden": 32, "critic_hidden": 32, "emb_dim": 16, "K": 16, "particles": 8, "steps": 4}


def _batch(obs_dim: int = 3, act_dim: int = 2, B: int = 16, terminal: bool = False, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(B, obs_dim, generator=g),
        "action": torch.rand(B, act_dim, generator=g) * 2 - 1,
        "reward": torch.rand(B, generator=g),
        "next_obs": torch.randn(B, obs_dim, generator=g),
        "mask": torch.zeros(B) if terminal else torch.ones(B),
    }


@pytest.mark.parametrize(
    "field, value, match",
    [("algo", "ppo", "algo"), ("temperature", 0.0, "temperature"), ("particles", 0, "particles"),
     ("gamma", 1.0, "gamma"), ("grad_clip", -1.0, "grad_clip"), ("policy", "gauss", "policy"),
     ("temperature_mode", "auto", "temperature_mode"), ("K", 2.5, "K"), ("cv", "tweedie", "cv"),
     ("cv", float("nan"), "cv"), ("proposal", "mixture", "proposal"), ("endpoints", "argmax", "endpoints"),
     ("exact_q", "cheetah", "exact_q"), ("algo", "noise", "cv='none'"), ("mixture", (0.5, 0.5), "mixture"),
     ("mixture", (0.0, 0.5, 0.5), "mixture"), ("behaviour", "argmax", "behaviour")],
)
def test_bad_config_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        AgentConfig(**{field: value}).validate()


def test_twin_critic_shapes_and_min():
    critic = TwinCritic(3, 2, hidden=8)
    obs, act = torch.randn(4, 5, 3), torch.randn(4, 5, 2)
    both = critic(obs, act)
    assert both.shape == (2, 4, 5)
    torch.testing.assert_close(critic.q_min(obs, act), torch.minimum(both[0], both[1]))


def test_argmax_picks_the_particle_with_the_largest_q():
    agent = Agent(3, 2, AgentConfig(**SMALL), seed=0)
    obs = torch.randn(5, 3)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    chosen = agent.choose(obs, "argmax", gen_a)
    particles = agent.actor.sample(obs, SMALL["particles"], temperature=agent.temperature, steps=SMALL["steps"],
                                   generator=gen_b)
    q = agent.critic.q_min(obs[:, None].expand(-1, SMALL["particles"], -1), torch.tanh(particles))
    torch.testing.assert_close(chosen, particles[torch.arange(5), q.argmax(-1)])
    assert agent.act(obs, "raw").shape == (5, 2) and agent.act(obs, "boltzmann").abs().max() <= 1
    with pytest.raises(ValueError, match="mode"):
        agent.choose(obs, "greedy")
    with pytest.raises(ValueError, match="obs"):
        agent.act(torch.randn(5, 4))


def test_boltzmann_choice_follows_softmax_of_q_over_temperature():
    """With a fixed particle set, the chosen index frequencies match softmax(Q / temperature)."""
    agent = Agent(1, 1, AgentConfig(**{**SMALL, "particles": 4}, temperature=0.5), seed=0)
    u = torch.tensor([[[-1.0], [0.0], [0.5], [1.5]]])
    agent._latents = lambda obs, n, gen: u.expand(obs.shape[0], -1, -1)  # freeze the particles
    obs = torch.zeros(20_000, 1)
    picked = agent.choose(obs, "boltzmann", torch.Generator().manual_seed(0))[:, 0]
    freq = torch.stack([(picked == v).float().mean() for v in u[0, :, 0]])
    q = agent.critic.q_min(torch.zeros(1, 4, 1), torch.tanh(u))[0]
    torch.testing.assert_close(freq, torch.softmax(q / 0.5, -1), atol=0.015, rtol=0)


@pytest.mark.parametrize("seed", [0, [0, 1]])
def test_one_solve_for_s_and_s_prime_picks_what_two_would(seed):
    """The update's particles at s and s' come from one ODE solve over both; the picks and the target value
    are those of separate solves (with the particles frozen, bit for bit: the same draws in the same order)."""
    agent = Agent(3, 2, AgentConfig(**SMALL), seed=seed)
    S, M = agent.n_seeds, agent.config.particles
    batch = {k: torch.cat([v] * S) for k, v in _batch().items()}  # S seed blocks of 16 rows
    agent._latents = lambda obs, n, gen: torch.sin(obs[:, None, :2] * torch.arange(1, n + 1)[None, :, None])
    state = agent.generator.get_state()
    particles, u1, value = agent._endpoints_and_next_value(batch, M)
    agent.generator.set_state(state)
    alone = agent._latents(batch["obs"], M, None)
    u1_alone = agent._pick(batch["obs"], alone, "boltzmann", agent.generator)
    u_next = agent._pick(batch["next_obs"], agent._latents(batch["next_obs"], M, None), "boltzmann", agent.generator)
    assert torch.equal(particles, alone) and torch.equal(u1, u1_alone)
    assert torch.equal(value, agent.critic_target.q_min(batch["next_obs"], torch.tanh(u_next)))


def test_sac_log_prob_matches_torch_distributions():
    policy = GaussianTanhPolicy(3, 2, hidden=16)
    obs = torch.randn(6, 3)
    u, log_prob = policy.rsample(obs, torch.Generator().manual_seed(0))
    mean, log_std = policy._dist(obs)
    base = torch.distributions.Normal(mean, log_std.exp())
    dist = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    reference = dist.log_prob(torch.tanh(u).clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(log_prob, reference, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("algo", ALGOS)
def test_one_update_per_algorithm(algo):
    agent = Agent(3, 2, AgentConfig(**SMALL, algo=algo), seed=0)
    target_before = copy.deepcopy(agent.critic_target.state_dict())
    metrics = agent.update(_batch())
    assert all(isinstance(v, float) for v in metrics.values())
    finite = {k for k, v in metrics.items() if torch.isfinite(torch.tensor(v))}
    assert finite == set(metrics) - ({"ess", "c"} if algo == "qsm" else set())  # QSM has no importance weights
    assert {"critic_loss", "actor_loss"} <= set(metrics)
    assert ("ess" in metrics) == (algo != "sac") and ("alpha" in metrics) == (algo == "sac")
    assert set(agent.update(_batch(seed=3), sync=False)) == set(metrics)
    # Polyak: theta_targ <- tau theta + (1 - tau) theta_targ, every step.
    tau = agent.config.tau
    for name, p in agent.critic.state_dict().items():
        torch.testing.assert_close(agent.critic_target.state_dict()[name], (1 - tau) * target_before[name] + tau * p)


def test_terminal_batches_do_not_bootstrap():
    """With mask = 0 the critic regresses onto the reward alone: its loss equals sum_i mean (Q_i - r)^2."""
    agent = Agent(3, 2, AgentConfig(**SMALL), seed=0)
    batch = _batch(terminal=True)
    with torch.no_grad():
        expected = ((agent.critic(batch["obs"], batch["action"]) - batch["reward"]) ** 2).mean(-1).sum()
    assert agent.update(batch)["critic_loss"] == pytest.approx(float(expected), rel=1e-6)


def test_reward_scale_temperature():
    fixed = Agent(3, 2, AgentConfig(**SMALL), seed=0)
    scaled = Agent(3, 2, AgentConfig(**SMALL, temperature_mode="reward_scale"), seed=0)
    rewards = torch.tensor([0.0, 10.0, 20.0, 30.0])
    assert fixed.calibrate_temperature(rewards) == 0.02
    assert scaled.calibrate_temperature(rewards) == pytest.approx(0.02 * float(rewards.std()))
    assert scaled.calibrate_temperature(100 * rewards) == pytest.approx(100 * 0.02 * float(rewards.std()), rel=1e-5)


@pytest.mark.parametrize("algo", ["rfm", "sac"])
def test_state_dict_round_trip_continues_identically(algo):
    cfg = AgentConfig(**SMALL, algo=algo)
    a = Agent(3, 2, cfg, seed=0)
    a.update(_batch(seed=1))
    b = Agent(3, 2, cfg, seed=123)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    ma, mb = a.update(_batch(seed=2)), b.update(_batch(seed=2))
    assert ma == mb
    for (name, pa), pb in zip(a.actor.state_dict().items(), b.actor.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="config"):
        Agent(3, 2, AgentConfig(**{**SMALL, "K": 17}, algo=algo), seed=0).load_state_dict(a.state_dict())


def test_a_checkpoint_older_than_a_config_field_loads_with_its_default():
    """Checkpoints written before ``behaviour`` existed (every run up to it) load into an agent with the default."""
    a = Agent(3, 2, AgentConfig(**SMALL), seed=0)
    old = copy.deepcopy(a.state_dict())
    del old["config"]["behaviour"]
    Agent(3, 2, AgentConfig(**SMALL), seed=1).load_state_dict(old)
    with pytest.raises(ValueError, match="config"):
        Agent(3, 2, AgentConfig(**SMALL, behaviour="raw"), seed=1).load_state_dict(old)


@pytest.mark.parametrize("algo, behaviour, acts", [("rfm", "boltzmann", "boltzmann"), ("rfm", "raw", "raw"),
                                                   ("sac", "boltzmann", "raw")])
def test_behaviour_sets_how_data_is_collected(algo, behaviour, acts):
    agent = Agent(3, 2, AgentConfig(**SMALL, algo=algo, behaviour=behaviour), seed=0)
    assert agent.behaviour_mode == acts


@pytest.mark.parametrize("overrides", [{"cv": "plugin", "proposal": "kernel"}, {"cv": "none"}, {"cv": 0.3},
                                       {"endpoints": "raw"}, {"endpoints": "raw", "proposal": "kernel"},
                                       {"policy": "diffusion"}, {"algo": "qsm", "policy": "diffusion"}])
def test_estimator_settings_run(overrides):
    agent = Agent(3, 2, AgentConfig(**SMALL, **overrides), seed=0)
    metrics = agent.update(_batch())
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("critic_loss", "actor_loss"))


def test_the_mixture_reaches_the_estimator():
    """AgentConfig.mixture is what the actor's estimator samples: all K draws from the kernel is the kernel
    proposal bit for bit, and the default mixture is not."""
    def actor_after_one_update(**overrides):
        agent = Agent(3, 2, AgentConfig(**SMALL, **overrides), seed=0)
        agent.update(_batch())
        return torch.cat([p.flatten() for p in agent.actor.parameters()])

    kernel = actor_after_one_update(proposal="kernel")
    torch.testing.assert_close(actor_after_one_update(mixture=(1.0, 0.0, 0.0)), kernel, rtol=0, atol=0)
    assert not torch.equal(actor_after_one_update(), kernel)


def test_agent_leaves_the_global_rng_alone():
    """Networks are built under a forked RNG: torch's global state is untouched, and a seed fixes the weights."""
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = Agent(3, 2, AgentConfig(**SMALL), seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = Agent(3, 2, AgentConfig(**SMALL), seed=5)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(pa, pb)


def test_bandit_q_is_the_reward():
    q = BanditQ()
    act = torch.rand(7, 2) * 2 - 1
    for c, landscape in enumerate(BANDIT_LANDSCAPES):
        obs = torch.zeros(7, 3)
        obs[:, c] = 1
        torch.testing.assert_close(q(obs, act), bandit_reward(landscape, act))
    with pytest.raises(ValueError, match="one-hot"):
        q(torch.zeros(7, 4), act)


@pytest.mark.parametrize("algo", ["rfm", "sac"])
def test_exact_critic_replaces_the_learned_one(algo):
    """With exact_q="bandit" the particle choice and actor read Q = r, and the critics are not trained."""
    agent = Agent(3, 2, AgentConfig(**SMALL, algo=algo, exact_q="bandit"), seed=0)
    critic_before = copy.deepcopy(agent.critic.state_dict())
    batch = _batch(terminal=True)
    batch["obs"] = torch.eye(3)[torch.arange(16) % 3]
    metrics = agent.update(batch)
    assert torch.isnan(torch.tensor(metrics["critic_loss"])) and torch.isfinite(torch.tensor(metrics["actor_loss"]))
    for name, value in agent.critic.state_dict().items():
        assert torch.equal(value, critic_before[name]), name
    obs = torch.eye(3)
    act = torch.rand(3, 2)
    torch.testing.assert_close(agent.q_value(obs, act), BanditQ()(obs, act))


def test_sac_argmax_is_tanh_of_the_mean():
    agent = Agent(3, 2, AgentConfig(**SMALL, algo="sac"), seed=0)
    obs = torch.randn(4, 3)
    torch.testing.assert_close(agent.act(obs, "argmax"), torch.tanh(agent.actor._dist(obs)[0]))


def test_boltzmann_and_raw_endpoints_share_the_particle_draw():
    """Same seed, same particles: the raw endpoint is particle 0, the Boltzmann one a pick among them."""
    cfg = AgentConfig(**SMALL)
    agent = Agent(3, 2, cfg, seed=0)
    obs = torch.randn(5, 3)
    particles = agent._latents(obs, cfg.particles, torch.Generator().manual_seed(0))
    picked = agent._pick(obs, particles, "boltzmann", torch.Generator().manual_seed(1))
    assert all(any(torch.equal(picked[b], particles[b, m]) for m in range(cfg.particles)) for b in range(5))


class _HostReads:
    """Counts Tensor -> Python conversions (bool, item, tolist, float, int) made from rfm_teach's own code."""

    NAMES = ("__bool__", "item", "tolist", "__float__", "__int__")

    def __init__(self, monkeypatch):
        import sys

        self.calls: list[str] = []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
                if "/rfm_teach/" in caller and "/tests/" not in caller:
                    self.calls.append(f"{_name} in {caller.rsplit('/', 1)[-1]}:{sys._getframe(1).f_lineno}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("overrides", [{}, {"cv": "plugin", "proposal": "kernel"}, {"algo": "qsm"},
                                       {"exact_q": "bandit"}, {"algo": "sac"}])
def test_one_update_reads_the_device_only_for_control_flow(monkeypatch, overrides):
    """No validation reads in an update: with sync=False the only read is the bootstrap branch (flow family).

    A host read is a sync on a GPU. The estimator, the target and the policy loss are called with
    check=False, so the update reads one value: whether any transition bootstraps (skipping the ODE
    solve at s' on a one-step bandit). sync=True adds exactly one transfer of all metrics.
    """
    agent = Agent(3, 2, AgentConfig(**SMALL, **overrides), seed=0)
    batch = _batch()
    batch["obs"] = torch.eye(3)[torch.arange(16) % 3]
    agent.update(batch)  # warm-up outside the count (optimiser state is created lazily)
    reads = _HostReads(monkeypatch)
    agent.update(batch, sync=False)
    expected = 0 if overrides.get("algo") == "sac" or "exact_q" in overrides else 1
    assert len(reads.calls) == expected, reads.calls
    assert all("_bootstraps" in c or "agent.py" in c for c in reads.calls)
    reads.calls.clear()
    agent.update(batch)
    assert len(reads.calls) == expected + 1, reads.calls
