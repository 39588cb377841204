"""Boltzmann targets, toy landscapes and exact answers on a grid."""

import math

import pytest
import torch

from rfm_teach.paths import LinearFlow
from rfm_teach.targets import AnisotropicQuadratic, Boltzmann, ExactGrid, log_sech2, make_toy


def test_log_sech2_is_stable_and_exact():
    u = torch.tensor([-800.0, -3.0, 0.0, 0.5, 800.0], dtype=torch.float64)
    expected = torch.log(1 / torch.cosh(u[1:4]) ** 2)
    torch.testing.assert_close(log_sech2(u)[1:4], expected)
    assert torch.isfinite(log_sech2(u)).all()
    assert log_sech2(u)[0].item() == pytest.approx(2 * (math.log(2) - 800.0))


@pytest.mark.parametrize("squash", [False, True])
def test_score_is_gradient_of_log_density(squash):
    target = Boltzmann(make_toy("ring"), 0.5, squash=squash)
    x = torch.randn(6, 2, dtype=torch.float64) * 0.5
    _, score = target.log_density_and_score(x)
    h = 1e-6
    eye = torch.eye(2, dtype=torch.float64)
    fd = torch.stack([(target.log_density(x + h * e) - target.log_density(x - h * e)) / (2 * h) for e in eye], -1)
    torch.testing.assert_close(score, fd, rtol=1e-6, atol=1e-6)


def test_squashed_score_has_the_jacobian_term():
    """grad_u log p1(u) = grad_a Q(tanh u) ⊙ sech^2(u) / temperature - 2 tanh(u) (notes §1)."""
    q = make_toy("quadratic")
    target = Boltzmann(q, 0.3, squash=True)
    u = torch.randn(5, 2, dtype=torch.float64)
    a = torch.tanh(u).requires_grad_(True)
    (grad_a,) = torch.autograd.grad(q(a).sum(), a)
    expected = grad_a / torch.cosh(u) ** 2 / 0.3 - 2 * torch.tanh(u)
    torch.testing.assert_close(target.log_density_and_score(u)[1], expected)


def test_latent_density_pushes_forward_to_action_space_boltzmann():
    """p_u(u) / prod_j sech^2(u_j) at a = tanh(u) equals exp(Q(a)/temperature) / Z_a on the box."""
    q, temperature = make_toy("two_moons"), 0.5
    latent = ExactGrid(Boltzmann(q, temperature, squash=True), extent=6.0, n=601)
    action = ExactGrid(Boltzmann(q, temperature, squash=False), extent=1.0, n=601)
    u = torch.tensor([[0.1, -0.2], [0.6, 0.3], [-0.4, 0.9], [1.2, -1.0]], dtype=torch.float64)
    log_pu = Boltzmann(q, temperature, squash=True).log_density(u) - latent.log_normaliser
    log_pa_pushed = log_pu - log_sech2(u).sum(-1)
    log_pa_exact = Boltzmann(q, temperature).log_density(torch.tanh(u)) - action.log_normaliser
    torch.testing.assert_close(log_pa_pushed, log_pa_exact, rtol=0, atol=2e-3)


def test_grid_normaliser_of_gaussian_target():
    """For the quadratic toy p1 = N(m, temperature diag(s^2)): Z = exp(Q(m)/T) (2π)^{d/2} prod sqrt(T) s."""
    toy, temperature = AnisotropicQuadratic(), 0.5
    grid = ExactGrid(Boltzmann(toy, temperature), extent=3.0, n=401)
    expected = sum(math.log(math.sqrt(2 * math.pi * temperature) * s) for s in toy.scales)
    assert grid.log_normaliser == pytest.approx(expected, abs=1e-8)
    torch.testing.assert_close(grid.mean(), torch.tensor(toy.mean, dtype=torch.float64), atol=1e-8, rtol=0)


def test_grid_posterior_mean_matches_gaussian_closed_form():
    toy, temperature, path = AnisotropicQuadratic(), 1.0, LinearFlow()
    grid = ExactGrid(Boltzmann(toy, temperature), extent=3.5, n=401)
    x_t = torch.tensor([[0.1, 0.4], [-0.5, -0.2], [0.9, 0.0]], dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        mean, _ = toy.posterior(x_t, t, path, temperature)
        torch.testing.assert_close(grid.posterior_mean(x_t, t, path), mean, atol=1e-7, rtol=0)


def test_grid_samples_follow_the_density():
    grid = ExactGrid(Boltzmann(make_toy("quadratic"), 1.0), extent=3.0, n=201)
    g = torch.Generator().manual_seed(0)
    x = grid.sample(20000, g)
    torch.testing.assert_close(x.mean(0), grid.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.tensor([0.25, 0.6], dtype=torch.float64), atol=0.02, rtol=0)


@pytest.mark.parametrize("name", ["ring", "two_moons", "quadratic"])
def test_toys_are_finite_and_normalisable(name):
    toy = make_toy(name)
    grid = ExactGrid(Boltzmann(toy, 0.5), extent=toy.extent, n=151)
    assert math.isfinite(grid.log_normaliser)
    edge = grid.density()[0].max() / grid.density().max()
    assert edge < 1e-6  # the mass sits inside the toy's extent


def test_bad_inputs():
    q = make_toy("ring")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            Boltzmann(q, bad)
    with pytest.raises(TypeError, match="q must be callable"):
        Boltzmann(3.0, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        Boltzmann(lambda a: a.sum(-1) * float("nan"), 1.0).log_density(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="to shape"):
        Boltzmann(lambda a: a, 1.0).log_density(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="unknown toy 'moons'"):
        make_toy("moons")
    with pytest.raises(ValueError, match="d = 1 or 2"):
        ExactGrid(Boltzmann(q, 1.0), dim=3)


def test_product_target_exact_answers_match_the_2d_grid():
    """A 2-D product landscape: 1-D quadrature per coordinate equals full 2D quadrature (with and without tanh)."""
    from rfm_teach.targets import ExactProduct, ProductLandscape

    for squash, extent in ((False, 1.5), (True, 4.0)):
        target = Boltzmann(ProductLandscape.bimodal(2), 0.5, squash=squash)
        product, grid = ExactProduct(target), ExactGrid(target, extent=extent, n=601)
        x_t = product.marginal_sample(6, 0.3, LinearFlow(), torch.Generator().manual_seed(0))
        torch.testing.assert_close(product.mean(), grid.mean(), atol=1e-6, rtol=0)
        torch.testing.assert_close(product.posterior_mean(x_t, 0.3, LinearFlow()), grid.posterior_mean(x_t, 0.3, LinearFlow()),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(product.posterior_variance(x_t, 0.3, LinearFlow()),
                                   grid.posterior_variance(x_t, 0.3, LinearFlow()), atol=1e-6, rtol=0)


def test_gaussian_closed_form_matches_the_grid_and_any_dimension_works():
    from rfm_teach.targets import ExactGaussian, ProductLandscape, exact_answers

    target = Boltzmann(AnisotropicQuadratic(), 1.0)
    x_t = torch.tensor([[0.2, -0.1], [1.0, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(ExactGaussian(target).posterior_variance(x_t, 0.5, LinearFlow()),
                               ExactGrid(target).posterior_variance(x_t, 0.5, LinearFlow()), atol=1e-6, rtol=0)
    exact6 = exact_answers(Boltzmann(ProductLandscape.bimodal(6), 1.0))
    samples = exact6.sample(20000, torch.Generator().manual_seed(1))
    assert samples.shape == (20000, 6)
    torch.testing.assert_close(samples.mean(0), exact6.mean(), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="d = 6"):
        ProductLandscape.bimodal(6)(torch.zeros(3, 2))
