"""benchmarks/reeval.py: a finished run, evaluated again on more start states, is the same policy."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from rfm_teach.train import make_config, train_seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reeval  # noqa: E402


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reeval") / "sac"
    config = make_config("tiny", env_id="Pendulum-v1", total_steps=300, warmup_steps=200, eval_every=300,
                         eval_episodes=2, agent={"algo": "sac"})
    train_seeds(config, [0, 1], out, progress=False)
    return out


def test_deterministic_actor_reproduces_the_logged_final_evaluation(sac_run):
    """SAC's selected action (tanh of the mean) draws no random numbers, so on the training-time
    evaluation's own start states (j < eval_episodes) the reloaded agent gives the logged returns, up to the
    float32 rounding of a larger batch of states (5 instead of 2 rows per seed in each matmul)."""
    source, rows = reeval.reevaluate(sac_run, episodes=5)
    assert source["algo"] == "sac" and source["step"] == 300 and source["train_eval_episodes"] == 2
    assert len(rows) == 2 * 2 * 5  # seeds x modes x start states
    for seed in (0, 1):
        with open(sac_run / f"seed_{seed}" / "log.csv", newline="") as f:
            logged = float(list(csv.DictReader(f))[-1]["return_argmax"])
        mine = [r["return"] for r in rows if r["seed"] == seed and r["mode"] == "argmax" and r["start"] < 2]
        assert np.mean(mine) == pytest.approx(logged, rel=1e-6)
        others = [r["return"] for r in rows if r["seed"] == seed and r["mode"] == "argmax" and r["start"] >= 2]
        assert len(others) == 3 and len(set(others)) == 3  # new start states, new episodes


def test_unfinished_or_wrong_directory_is_refused(tmp_path, sac_run):
    with pytest.raises(ValueError, match="seed_<s>"):
        reeval.reevaluate(tmp_path, episodes=3)
    (sac_run / "checkpoints").rename(tmp_path / "moved")
    try:
        with pytest.raises(ValueError, match="no checkpoint"):
            reeval.reevaluate(sac_run, episodes=3)
    finally:
        (tmp_path / "moved").rename(sac_run / "checkpoints")


def test_reacher_return_is_its_two_info_terms():
    """The sums that split Reacher's return: distance term plus control term is the return, step for step."""
    from rfm_teach.envs import make_env

    env = reeval.InfoTotals(make_env("Reacher-v5"), ("reward_dist", "reward_ctrl"))
    env.reset(seed=3)
    rng, total, done = np.random.default_rng(0), 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        total, done = total + float(reward), terminated or truncated
    assert env.totals["reward_ctrl"] < 0 and env.totals["reward_dist"] < 0
    assert env.totals["reward_dist"] + env.totals["reward_ctrl"] == pytest.approx(total, rel=1e-6)
    env.reset(seed=4)
    assert env.totals == {"reward_dist": 0.0, "reward_ctrl": 0.0}
    wrong = reeval.InfoTotals(make_env("Reacher-v5"), ("reward_fwd",))
    wrong.reset(seed=0)
    with pytest.raises(ValueError, match="reward_fwd"):
        wrong.step(np.zeros(2, np.float32))


def test_swapped_critics_change_the_selection_and_not_the_raw_sample(tmp_path, sac_run):
    """With another run's critics the best-of-N pick changes; the raw sample, which reads no critic, does not."""
    config = make_config("tiny", env_id="Pendulum-v1", total_steps=300, warmup_steps=200, eval_every=300,
                         eval_episodes=2, agent={"particles": 4, "K": 8})
    train_seeds(config, [0, 1], tmp_path / "rfm", progress=False)
    _, own = reeval.reevaluate(tmp_path / "rfm", episodes=3)
    source, swapped = reeval.reevaluate(tmp_path / "rfm", episodes=3, critics_from=sac_run)
    assert source["label"] == "rfm+critics_sac" and source["critics_from"]["algo"] == "sac"
    assert {r["run"] for r in swapped} == {"rfm+critics_sac"}
    pick = {mode: [r["return"] for r in own if r["mode"] == mode] for mode in ("argmax", "raw")}
    pick_swapped = {mode: [r["return"] for r in swapped if r["mode"] == mode] for mode in ("argmax", "raw")}
    assert pick_swapped["raw"] == pick["raw"]
    assert pick_swapped["argmax"] != pick["argmax"]
    train_seeds(config, [0], tmp_path / "one_seed", progress=False)
    with pytest.raises(ValueError, match="seeds"):
        reeval.reevaluate(tmp_path / "rfm", episodes=3, critics_from=tmp_path / "one_seed")


def test_a_one_seed_run_is_found_where_the_command_line_checkpoints_it(tmp_path):
    """`rfm-teach train --seeds 0` runs train() into OUT/seed_0 and checkpoints to OUT/checkpoints/seed_0.pt."""
    from rfm_teach.train import train

    config = make_config("tiny", env_id="Pendulum-v1", total_steps=250, warmup_steps=200, eval_every=250,
                         eval_episodes=1, agent={"algo": "sac"})
    train(config, tmp_path / "one" / "seed_0", progress=False)
    source, rows = reeval.reevaluate(tmp_path / "one", episodes=2)
    assert source["step"] == 250 and {r["seed"] for r in rows} == {0} and len(rows) == 2 * 2
