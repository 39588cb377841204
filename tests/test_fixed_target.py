"""The fixed-target fit: validation, reproducibility from the seed, and that a tiny fit beats its initialisation."""

import pytest
import torch

from rfm_teach.fixed_target import exact_reference, fit_to_target

TINY = dict(K=16, batch=64, eval_every=20, n_eval=300, sample_steps=8, hidden=32, grid_n=81, progress=False)


def test_tiny_fit_reduces_sliced_wasserstein():
    torch.manual_seed(123)  # the fit must not depend on the global seed
    res = fit_to_target("two_moons", cv="auto", steps=60, lr=3e-3, seed=0, **TINY)
    first, last = res.curves[0], res.final()
    assert [r["step"] for r in res.curves] == [0, 20, 40, 60]
    assert last["sw"] < 0.5 * first["sw"], (first, last)
    assert last["tv"] < first["tv"]
    assert res.samples.shape == (300, 2)
    assert first["loss"] is None and last["loss"] > 0 and last["ess"] >= 1
    rows = res.to_rows()
    assert rows[0]["toy"] == "two_moons" and rows[0]["cv"] == "auto" and rows[-1]["step"] == 60


def test_fit_is_reproducible_from_the_seed():
    a = fit_to_target("ring", cv="none", steps=10, seed=3, **{**TINY, "eval_every": 10})
    torch.manual_seed(999)
    b = fit_to_target("ring", cv="none", steps=10, seed=3, **{**TINY, "eval_every": 10})
    c = fit_to_target("ring", cv="none", steps=10, seed=4, **{**TINY, "eval_every": 10})
    strip = lambda res: [{k: v for k, v in r.items() if k != "wall_s"} for r in res.curves]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    assert torch.equal(a.samples, b.samples)


def test_diffusion_policy_and_exact_oracle_run():
    res = fit_to_target("quadratic", policy="diffusion", cv="gradient", steps=4, **{**TINY, "eval_every": 2})
    assert len(res.curves) == 3
    oracle = fit_to_target("quadratic", cv="exact", steps=2, oracle_grid_n=31, **{**TINY, "eval_every": 2})
    assert oracle.final()["ess"] is None and oracle.final()["loss"] > 0


def test_noise_floor_is_small_and_positive():
    _, _, ref, bandwidth, floor = exact_reference("two_moons", 1.0, n_eval=500, seed=0, grid_n=81)
    assert ref.shape == (500, 2) and bandwidth > 0
    assert 0 < floor["sw"] < 0.1 and abs(floor["mmd2"]) < 0.01 and 0 < floor["tv"] < 0.5


def test_fit_validation():
    with pytest.raises(ValueError, match="policy"):
        fit_to_target("two_moons", policy="gan", steps=1)
    with pytest.raises(ValueError, match="unknown toy"):
        fit_to_target("three_moons", steps=1)
    with pytest.raises(ValueError, match="steps"):
        fit_to_target("two_moons", steps=-1)
    with pytest.raises(ValueError, match="endpoints"):
        fit_to_target("two_moons", endpoints="buffer", steps=1)
    with pytest.raises(ValueError, match="lr"):
        fit_to_target("two_moons", lr=0.0, steps=1)
