"""Seeds as a batch dimension: one batched agent is S separate agents (rfm_teach.seeds)."""

import csv
import dataclasses
import json

import pytest
import torch
from torch import nn

from rfm_teach import seeds
from rfm_teach.agent import Agent, AgentConfig
from rfm_teach.envs import BANDIT_ID
from rfm_teach.seeds import SeedGenerators, SeedLinear, clip_grad_norm_per_seed, stack_seeds
from rfm_teach.train import make_config, train, train_seeds

SMALL = {"hidden": 16, "critic_hidden": 16, "emb_dim": 8, "K": 8, "particles": 4, "steps": 3}


def test_seed_linear_initialises_and_computes_like_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(5, 7)
    torch.manual_seed(0)
    layer = SeedLinear(5, 7)
    assert torch.equal(layer.weight[0], ref.weight) and torch.equal(layer.bias[0], ref.bias)
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(layer(x), ref(x))


def test_each_seed_draws_what_it_draws_alone():
    gens = SeedGenerators([3, 5])
    alone = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(5)]
    kw = {"dtype": torch.float32, "device": torch.device("cpu")}
    assert torch.equal(seeds.randn((4, 2, 3), gens, **kw), torch.cat([torch.randn(2, 2, 3, generator=g) for g in alone]))
    assert torch.equal(seeds.rand((6,), gens, **kw), torch.cat([torch.rand(3, generator=g) for g in alone]))
    probs = torch.rand(4, 5)
    got = seeds.multinomial(probs, 3, gens, replacement=True)
    want = torch.cat([torch.multinomial(p, 3, replacement=True, generator=g) for p, g in zip(probs.split(2), alone)])
    assert torch.equal(got, want)
    # a plain generator is torch itself
    assert torch.equal(seeds.randn((2, 2), torch.Generator().manual_seed(1), **kw),
                       torch.randn(2, 2, generator=torch.Generator().manual_seed(1)))


def test_per_seed_clipping_is_torch_clipping_of_each_seed():
    mods = []
    for s in range(3):
        torch.manual_seed(s)
        mods.append(nn.Sequential(SeedLinear(4, 6), nn.ReLU(), SeedLinear(6, 2)))
    stacked = stack_seeds(mods)
    grads = [[torch.randn_like(p) * (10.0 ** s) for p in m.parameters()] for s, m in enumerate(mods)]
    for p_stacked, *per_seed in zip(stacked.parameters(), *grads):
        p_stacked.grad = torch.cat(per_seed)
    clip_grad_norm_per_seed(list(stacked.parameters()), 1.0, 3)
    for s, m in enumerate(mods):
        for p, g in zip(m.parameters(), grads[s]):
            p.grad = g.clone()
        nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        for p_stacked, p in zip(stacked.parameters(), m.parameters()):
            torch.testing.assert_close(p_stacked.grad[s:s + 1], p.grad)


def _batch(S: int, B: int, obs_dim: int, act_dim: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(S, B, obs_dim, generator=g), "action": torch.rand(S, B, act_dim, generator=g) * 2 - 1,
            "reward": torch.randn(S, B, generator=g), "next_obs": torch.randn(S, B, obs_dim, generator=g),
            "mask": torch.ones(S, B)}


@pytest.mark.parametrize("overrides", [{"algo": "rfm"}, {"algo": "sac"}, {"algo": "rfm", "temperature_mode": "reward_scale"},
                                       {"algo": "rfm", "policy": "diffusion", "cv": "plugin", "proposal": "kernel"}])
def test_a_batched_agent_updates_like_separate_agents(overrides):
    """Same initial weights, the same random numbers consumed, the same updates and actions: all bit for bit
    (16 rows per seed and widths of 16: multiples of 16, see rfm_teach.seeds)."""
    cfg = AgentConfig(**SMALL, **overrides)
    ids = [0, 1, 2]
    batched = Agent(3, 2, cfg, seed=ids)
    alone = [Agent(3, 2, cfg, seed=s) for s in ids]
    for name, p in batched.actor.named_parameters():
        for s, a in enumerate(alone):
            assert torch.equal(p[s:s + 1], dict(a.actor.named_parameters())[name]), name
    warmup = torch.randn(3, 50, generator=torch.Generator().manual_seed(9)) * torch.tensor([[1.0], [2.0], [3.0]])
    temps = batched.calibrate_temperature(warmup)
    assert temps == [a.calibrate_temperature(warmup[s]) for s, a in enumerate(alone)]
    for step in range(3):
        batch = _batch(3, 16, 3, 2, seed=step)
        m = batched.update(batch)
        ms = [a.update({k: v[s] for k, v in batch.items()}) for s, a in enumerate(alone)]
        for key in ("critic_loss", "actor_loss"):
            assert torch.equal(torch.tensor(m[key]), torch.tensor([x[key] for x in ms])), key
    states = batched.generator.get_state()
    for s, a in enumerate(alone):
        assert torch.equal(states[s], a.generator.get_state())  # the same random numbers, in the same order
        for part in ("actor", "critic", "critic_target"):
            for name, p in getattr(batched, part).named_parameters():
                assert torch.equal(p[s:s + 1], dict(getattr(a, part).named_parameters())[name]), f"{part}.{name} seed {s}"
    obs = torch.randn(3, 5, 3)
    acts = batched.act(obs, "raw", SeedGenerators(ids))
    for s, a in enumerate(alone):
        assert torch.equal(acts[s], a.act(obs[s], "raw", torch.Generator().manual_seed(s)))


def test_a_batched_agent_rejects_bad_seeds_and_shapes():
    cfg = AgentConfig(**SMALL)
    with pytest.raises(ValueError, match="non-empty"):
        Agent(3, 2, cfg, seed=[])
    with pytest.raises(ValueError, match="distinct"):
        Agent(3, 2, cfg, seed=[1, 1])
    agent = Agent(3, 2, cfg, seed=[0, 1])
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 'B', 3\)"):
        agent.act(torch.randn(5, 3))
    with pytest.raises(ValueError, match="SeedGenerators with 2"):
        agent.act(torch.randn(2, 5, 3), "raw", torch.Generator())


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader(f)]


def test_train_seeds_writes_one_run_per_seed_and_resumes_exactly(tmp_path):
    config = make_config("tiny", env_id=BANDIT_ID, total_steps=120, warmup_steps=64, batch_size=16, eval_every=40,
                         eval_episodes=3, checkpoint_every=50, device="cpu", agent=SMALL)
    whole = train_seeds(config, [0, 1], tmp_path / "whole", progress=False)
    train_seeds(config, [0, 1], tmp_path / "split", stop_after=70, progress=False)
    resumed = train_seeds(config, [0, 1], tmp_path / "split", resume=True, progress=False)
    for a, b in zip(whole["runs"], resumed["runs"]):
        rows = _rows(a["log"])
        assert len(rows) == 3 and rows == _rows(b["log"])
    for s in (0, 1):
        run = tmp_path / "whole" / f"seed_{s}"
        assert json.loads((run / "config.json").read_text())["seed"] == s
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["seeds"] == [s] and manifest["extra"]["batched_seeds"] == [0, 1]
    # Each seed's log is that of a separate run of that seed, bit for bit (losses, ESS, returns).
    for s in (0, 1):
        alone = train(dataclasses.replace(config, seed=s), tmp_path / f"alone_{s}", progress=False)
        assert _rows(whole["runs"][s]["log"]) == _rows(alone["log"]), f"seed {s}"


def test_one_seed_of_a_batch_runs_alone():
    """seed_slice: seed s of a batched agent, loaded into an agent built with that seed, acts as it did in the batch."""
    cfg = AgentConfig(**SMALL)
    batched = Agent(3, 2, cfg, seed=[4, 7])
    batched.update(_batch(2, 16, 3, 2))
    state = batched.state_dict()
    obs = torch.randn(2, 6, 3)
    in_batch = batched.act(obs, "argmax", SeedGenerators([0, 1]))
    for i, seed in enumerate([4, 7]):
        alone = Agent(3, 2, cfg, seed=seed)
        for part in ("actor", "critic"):
            getattr(alone, part).load_state_dict(seeds.seed_slice(state[part], i))
        assert torch.equal(alone.act(obs[i], "argmax", torch.Generator().manual_seed(i)), in_batch[i])
