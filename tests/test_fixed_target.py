"""The fixed-target fit: one config object, validation, reproducibility, the manifest, the oracle and the d = 6 target."""

import dataclasses
import json
import math

import pytest
import torch

from rfm_teach.fixed_target import (FitConfig, GridOracle, exact_reference, exact_sampler_distances, fit_to_target,
                                    make_target)
from rfm_teach.paths import LinearFlow
from rfm_teach.results import validate_manifest
from rfm_teach.targets import ExactGrid

TINY = FitConfig(K=16, M=8, batch=64, eval_every=20, n_eval=300, sample_steps=8, endpoint_steps=4, hidden=32,
                 n_blocks=1, grid_n=81, oracle_grid_n=61, lr=3e-3)


def test_tiny_fit_reduces_sliced_wasserstein():
    torch.manual_seed(123)  # the fit must not depend on the global seed
    res = fit_to_target(TINY, toy="two_moons", cv="auto", steps=60, progress=False)
    first, last = res.curves[0], res.final()
    assert [r["step"] for r in res.curves] == [0, 20, 40, 60]
    assert last["sw"] < 0.5 * first["sw"], (first, last)
    assert last["tv"] < first["tv"]
    assert res.samples.shape == (300, 2)
    assert first["loss"] is None and last["loss"] > 0 and last["ess"] >= 1
    rows = res.to_rows()
    assert rows[0]["toy"] == "two_moons" and rows[0]["estimator"] == "auto+policy" and rows[-1]["step"] == 60


def test_fit_is_reproducible_and_leaves_the_global_rng_alone():
    cfg = dataclasses.replace(TINY, toy="ring", cv="none", steps=10, eval_every=10, seed=3)
    torch.manual_seed(999)
    before = torch.random.get_rng_state()
    a = fit_to_target(cfg, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before), "fit_to_target must not touch the global torch seed"
    b = fit_to_target(cfg, progress=False)
    c = fit_to_target(cfg, seed=4, progress=False)
    strip = lambda res: [{k: v for k, v in r.items() if k != "wall_s"} for r in res.curves]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    assert torch.equal(a.samples, b.samples)


def test_proposal_switch_changes_the_fit():
    """proposal="policy" passes the policy's samples to the estimator; "kernel" is the paper's estimator."""
    cfg = dataclasses.replace(TINY, toy="two_moons", cv="plugin", steps=4, eval_every=4)
    ours = fit_to_target(cfg, proposal="policy", progress=False)
    paper = fit_to_target(cfg, proposal="kernel", progress=False)
    assert ours.final()["ess"] != paper.final()["ess"]
    assert paper.to_rows()[0]["estimator"] == "plugin"


def test_diffusion_policy_exact_oracle_and_product_target_run():
    res = fit_to_target(TINY, toy="quadratic", policy="diffusion", cv="gradient", steps=4, eval_every=2, progress=False)
    assert len(res.curves) == 3
    oracle = fit_to_target(TINY, toy="quadratic", cv="exact", steps=2, eval_every=2, progress=False)
    assert oracle.final()["ess"] is None and oracle.final()["loss"] > 0
    d6 = fit_to_target(TINY, toy="bimodal6", cv="exact", steps=2, eval_every=2, progress=False)
    assert d6.samples.shape == (300, 6) and 0 <= d6.final()["tv"] <= 1


def test_fit_writes_its_own_manifest_with_the_full_config(tmp_path):
    cfg = dataclasses.replace(TINY, steps=2, eval_every=2)
    fit_to_target(cfg, out_dir=tmp_path / "run", command="pytest", progress=False)
    manifest = validate_manifest(tmp_path / "run")
    assert [FitConfig(**c) for c in manifest["extra"]["configs"]] == [cfg]   # the full config reads back
    assert manifest["extra"]["estimators"] == ["auto+policy"]
    assert set(manifest["files"]) == {"curves.csv", "floor.csv", "samples.csv"}
    json.dumps(manifest)


def test_grid_oracle_matches_fine_quadrature_up_to_t_near_one():
    """The fast oracle equals grid quadrature, and near t = 1 its small-noise expansion beats a coarse grid."""
    landscape, target, _ = make_target("two_moons", 1.0)
    path = LinearFlow()
    fine = ExactGrid(target, extent=landscape.extent, n=801)
    oracle = GridOracle(target, landscape.extent, 101, 2)
    x1 = fine.sample(32, torch.Generator().manual_seed(0))
    for t in (0.3, 0.8, 0.99):
        u = t * x1 + (1 - t) * torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        tt = torch.full((32,), t, dtype=torch.float64)
        err = (oracle(u, tt, path) - fine.posterior_mean(u, tt, path)).norm(dim=-1).max() / (1 - t)
        assert float(err) < 0.05, (t, float(err))  # in velocity units


def test_noise_floor_is_small_and_positive():
    _, _, ref, bandwidth, floor = exact_reference("two_moons", 1.0, n_eval=500, seed=0, grid_n=81)
    assert ref.shape == (500, 2) and bandwidth > 0
    assert 0 < floor["sw"] < 0.1 and abs(floor["mmd2"]) < 0.01 and 0 < floor["tv"] < 0.5
    _, _, ref6, _, floor6 = exact_reference("bimodal6", 1.0, n_eval=500, seed=0)
    assert ref6.shape == (500, 6) and 0 < floor6["tv"] < 0.2 and math.isfinite(floor6["sw"])


def test_exact_velocity_sampler_reaches_the_floor_with_enough_steps():
    """Euler on the exact velocity: 50 steps land at the exact-sample floor, 2 steps far from it (the sampler's cap)."""
    fine = exact_sampler_distances(toy="bimodal2", n_eval=400, sample_steps=50)
    coarse = exact_sampler_distances(toy="bimodal2", n_eval=400, sample_steps=2)
    floor = fine["floor"]
    assert coarse["floor"] == floor  # the same exact reference for both
    assert fine["sw"] < 1.3 * floor["sw"] and fine["tv"] < 1.3 * floor["tv"]
    assert coarse["sw"] > 3 * floor["sw"] and coarse["tv"] > 2 * floor["tv"]


def test_fit_validation():
    with pytest.raises(ValueError, match="policy"):
        fit_to_target(policy="gan", steps=1)
    with pytest.raises(ValueError, match="unknown toy"):
        fit_to_target(toy="three_moons", steps=1)
    with pytest.raises(ValueError, match="steps"):
        fit_to_target(steps=-1)
    with pytest.raises(ValueError, match="endpoints"):
        fit_to_target(endpoints="buffer", steps=1)
    with pytest.raises(ValueError, match="lr"):
        fit_to_target(lr=0.0, steps=1)
    with pytest.raises(ValueError, match="proposal"):
        fit_to_target(proposal="buffer", steps=1)
    with pytest.raises(ValueError, match="M"):
        fit_to_target(M=512, batch=256, steps=1)
    with pytest.raises(TypeError):
        fit_to_target(widht=3)
