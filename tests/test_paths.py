"""Paths: coefficients, derivatives, and the conversions between the four regression targets."""

import pytest
import torch

from rfm_teach.paths import TARGET_KINDS, LinearFlow, VEDiffusion, VPDiffusion, as_time, make_path
from rfm_teach.targets import Boltzmann, ExactGrid, make_toy

PATHS = [LinearFlow(), VPDiffusion(), VEDiffusion()]
T = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)[:, None]


def test_linear_flow_endpoints_and_velocity():
    path = LinearFlow()
    x1, x0 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5, 1), 0.3, dtype=torch.float64)
    torch.testing.assert_close(path.interpolate(x1, x0, t), 0.3 * x1 + 0.7 * x0)
    torch.testing.assert_close(path.conditional_velocity(x1, x0, t), x1 - x0)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_derivatives_match_finite_differences(path):
    h = 1e-6
    torch.testing.assert_close(path.d_alpha(T), (path.alpha(T + h) - path.alpha(T - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(path.d_beta(T), (path.beta(T + h) - path.beta(T - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_vp_preserves_variance_and_t1_is_data():
    vp = VPDiffusion()
    torch.testing.assert_close(vp.alpha(T) ** 2 + vp.beta(T) ** 2, torch.ones_like(T))
    one = torch.ones(1, 1, dtype=torch.float64)
    assert vp.alpha(one).item() == pytest.approx(1.0) and vp.beta(one).item() == pytest.approx(0.0)
    assert vp.alpha(torch.zeros(1, 1, dtype=torch.float64)).item() < 1e-2  # (almost) pure noise at t = 0


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("src", TARGET_KINDS)
@pytest.mark.parametrize("dst", TARGET_KINDS)
def test_conversions_round_trip(path, src, dst):
    g = torch.Generator().manual_seed(0)
    x_t, value = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    t = torch.rand(7, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    there = path.convert(value, x_t, t, src=src, dst=dst)
    back = path.convert(there, x_t, t, src=dst, dst=src)
    torch.testing.assert_close(back, value, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_tweedie_score_equals_gradient_of_exact_marginal(path):
    """-mu0 / beta_t, converted from the exact posterior mean, is the gradient of the exact log p_t."""
    grid = ExactGrid(Boltzmann(make_toy("two_moons"), 1.0), extent=1.6, n=241)
    x_t = torch.tensor([[0.2, -0.1], [0.5, 0.4], [-0.6, 0.3]], dtype=torch.float64)
    t = 0.6
    tt = as_time(t, x_t)
    score = path.convert(grid.posterior_mean(x_t, t, path), x_t, tt, src="x1", dst="score")
    h = 1e-5
    eye = torch.eye(2, dtype=torch.float64)
    fd = torch.stack(
        [(grid.log_marginal(x_t + h * e, t, path) - grid.log_marginal(x_t - h * e, t, path)) / (2 * h) for e in eye], -1
    )
    torch.testing.assert_close(score, fd, rtol=1e-5, atol=1e-5)


def test_velocity_from_mu1_equals_velocity_from_mu0_on_linear_path():
    path = LinearFlow()
    x_t, mu1 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4, 1), 0.25, dtype=torch.float64)
    mu0 = path.convert(mu1, x_t, t, src="x1", dst="x0")
    v = path.convert(mu1, x_t, t, src="x1", dst="velocity")
    torch.testing.assert_close(v, (mu1 - x_t) / (1 - t))
    torch.testing.assert_close(v, (x_t - mu0) / t)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_time_outside_open_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="strictly inside"):
        as_time(bad, torch.zeros(3, 2))


def test_time_shape_and_type_errors():
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        as_time(torch.full((4,), 0.5), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, d\)"):
        as_time(0.5, torch.zeros(3))
    with pytest.raises(TypeError, match="float or a torch.Tensor"):
        as_time("0.5", torch.zeros(3, 2))


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown path 'cosine'"):
        make_path("cosine")
    with pytest.raises(ValueError, match="dst must be one of"):
        LinearFlow().convert(torch.zeros(1, 2), torch.zeros(1, 2), torch.full((1, 1), 0.5), src="x1", dst="eps")
    with pytest.raises(ValueError, match="beta_min"):
        VPDiffusion(beta_min=5.0, beta_max=1.0)
