"""rfm_teach.scoring: bias/variance split and the two references, against closed forms."""

import pytest
import torch

from rfm_teach.estimators import posterior_mean
from rfm_teach.paths import LinearFlow, VPDiffusion
from rfm_teach.scoring import score_estimates, score_estimator, target_slope
from rfm_teach.targets import AnisotropicQuadratic, Boltzmann, ExactGaussian, exact_answers

FLOW = LinearFlow()


def test_bias_plus_variance_is_mse_and_known_errors_come_back():
    exact = ExactGaussian(Boltzmann(AnisotropicQuadratic(), 1.0))
    g = torch.Generator().manual_seed(0)
    x_t = exact.marginal_sample(50, 0.5, FLOW, g)
    mu = exact.posterior_mean(x_t, 0.5, FLOW)
    shift = torch.tensor([0.3, -0.4], dtype=torch.float64)
    noise = 0.1 * torch.randn(50, 400, 2, dtype=torch.float64, generator=g)
    s = score_estimates(mu[:, None] + shift + noise, x_t, 0.5, exact, FLOW, kinds=("x1", "velocity"))
    assert s["x1"].mse == pytest.approx(s["x1"].bias2 + s["x1"].variance, rel=1e-12)
    assert s["x1"].bias2 == pytest.approx(0.25, rel=0.02) and s["x1"].variance == pytest.approx(0.02, rel=0.05)
    # velocity on the linear flow: v = (mu1 - x_t) / (1 - t), errors scale by 1 / (1 - t) = 2
    assert s["velocity"].mse == pytest.approx(4 * s["x1"].mse, rel=1e-9)
    assert s["velocity"].posterior_var == pytest.approx(4 * s["x1"].posterior_var, rel=1e-9)


def test_one_exact_posterior_draw_scores_its_trace_variance():
    """Using one exact posterior draw as the estimate: MSE = E tr Cov(x1 | x_t), so over_one_draw ≈ 1."""
    toy = AnisotropicQuadratic()
    exact = ExactGaussian(Boltzmann(toy, 1.0))

    def one_draw(x, t, g):
        mean, var = toy.posterior(x, t, FLOW, 1.0)
        return mean + var.sqrt() * torch.randn(mean.shape, dtype=mean.dtype, generator=g)

    s = score_estimator(one_draw, exact, 0.3, path=FLOW, rows=40, reps=200, generator=torch.Generator().manual_seed(1))
    assert s["estimate"]["x1"].over_one_draw == pytest.approx(1.0, abs=0.05)


def test_slope_of_each_target_kind():
    x_t, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4, 1), 0.3, dtype=torch.float64)
    path = VPDiffusion()
    torch.testing.assert_close(target_slope(path, x_t, t, "x0"), (-path.alpha(t) / path.beta(t)).expand(4, 2))
    torch.testing.assert_close(target_slope(FLOW, x_t, t, "x1"), torch.ones(4, 2, dtype=torch.float64))


def test_paired_estimators_and_errors():
    target = Boltzmann(AnisotropicQuadratic(), 1.0)
    exact = exact_answers(target)

    def both(x, t, g):
        return {cv: posterior_mean(target, x, t, K=8, cv=cv, generator=g).mean for cv in ("none", "plugin")}

    s = score_estimator(both, exact, 0.6, path=FLOW, rows=5, reps=4, generator=torch.Generator().manual_seed(2))
    assert set(s) == {"none", "plugin"} and s["plugin"]["x1"].mse < s["none"]["x1"].mse
    with pytest.raises(ValueError, match="reps must be >= 2"):
        score_estimator(both, exact, 0.6, path=FLOW, reps=1)
    with pytest.raises(ValueError, match="unknown target kind"):
        target_slope(FLOW, torch.zeros(1, 2), torch.full((1, 1), 0.5), "noise")
