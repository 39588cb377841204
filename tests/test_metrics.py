"""Sample distances against closed forms: SW2 and MMD² between Gaussians, TV against exact grid masses."""

import math

import pytest
import torch

from rfm_teach.metrics import grid_tv, median_bandwidth, mmd2, sliced_wasserstein
from rfm_teach.targets import Boltzmann, ExactGrid, make_toy


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(n: int, mean, std: float, seed: int) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=torch.float64)
    return mean + std * torch.randn(n, mean.numel(), dtype=torch.float64, generator=gen(seed))


@pytest.mark.parametrize("shift", [(1.0, 0.5), (0.0, 2.0), (0.3, -0.3, 0.6)])
def test_sliced_wasserstein_between_shifted_gaussians(shift):
    """N(0, I) vs N(m, I): every projection is a 1-D shift by <theta, m>, so SW2^2 = E<theta, m>^2 = |m|^2 / d."""
    d = len(shift)
    x = gaussian(4000, [0.0] * d, 1.0, 1)
    y = gaussian(3000, shift, 1.0, 2)  # unequal sizes: matched quantiles
    exact = math.sqrt(sum(s * s for s in shift) / d)
    assert sliced_wasserstein(x, y, n_projections=1000, generator=gen(3)) == pytest.approx(exact, rel=0.06, abs=0.03)


def test_sliced_wasserstein_of_a_cloud_with_itself_is_zero_and_reproducible():
    x = gaussian(500, [0.0, 0.0], 1.0, 1)
    assert sliced_wasserstein(x, x, generator=gen(0)) == 0.0
    y = gaussian(500, [0.5, 0.0], 1.0, 2)
    assert sliced_wasserstein(x, y, generator=gen(7)) == sliced_wasserstein(x, y, generator=gen(7))


def test_mmd2_between_gaussians_matches_closed_form():
    """N(m1, s^2 I) vs N(m2, s^2 I), Gaussian kernel of bandwidth h:
    MMD^2 = 2 (h^2 / (h^2 + 2 s^2))^(d/2) (1 - exp(-|m1 - m2|^2 / (2 (h^2 + 2 s^2))))."""
    h, s, d = 1.0, 1.0, 2
    delta2 = 1.0**2 + 0.5**2
    exact = 2 * (h * h / (h * h + 2 * s * s)) ** (d / 2) * (1 - math.exp(-delta2 / (2 * (h * h + 2 * s * s))))
    x, y = gaussian(3000, [0.0, 0.0], s, 1), gaussian(3000, [1.0, 0.5], s, 2)
    assert mmd2(x, y, bandwidth=h) == pytest.approx(exact, abs=0.015)


def test_mmd2_is_about_zero_for_the_same_law_and_positive_for_a_shift():
    x, x2 = gaussian(1500, [0.0, 0.0], 1.0, 1), gaussian(1500, [0.0, 0.0], 1.0, 2)
    same = mmd2(x, x2)
    shifted = mmd2(x, gaussian(1500, [0.7, 0.0], 1.0, 3))
    assert abs(same) < 3e-3
    assert shifted > 0.02 > 10 * abs(same)
    assert median_bandwidth(x) == pytest.approx(math.sqrt(2) * math.sqrt(2 * math.log(2)) * 1.0, rel=0.1)  # median of |x - x'| ~ Rayleigh(sqrt 2)


def test_grid_tv_of_exact_samples_shrinks_and_shifted_samples_are_far():
    toy = make_toy("two_moons")
    grid = ExactGrid(Boltzmann(toy, 1.0), extent=toy.extent, n=121)
    tv_small = grid_tv(grid.sample(1000, gen(1)), grid)
    tv_large = grid_tv(grid.sample(64000, gen(2)), grid)
    assert tv_large < 0.5 * tv_small  # pure sampling noise, ~ 1 / sqrt(N)
    assert tv_large < 0.05
    shifted = grid.sample(4000, gen(3)) + torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert grid_tv(shifted, grid) > 0.6
    outside = torch.full((10, 2), 10.0, dtype=torch.float64)
    assert grid_tv(outside, grid) == pytest.approx(1.0)


def test_grid_tv_is_zero_when_the_histogram_is_exact():
    """Place samples on grid points in proportion to their exact mass (a 1-D grid, 5 bins)."""
    target = Boltzmann(lambda a: -0.5 * (a[..., 0] / 0.5) ** 2, 1.0)
    grid = ExactGrid(target, extent=2.0, n=5, dim=1)
    mass = torch.softmax(grid.log_p, 0)
    counts = torch.round(mass * 100000).long()
    samples = grid.points.repeat_interleave(counts, 0)
    assert grid_tv(samples, grid, bins=5) < 1e-4


def test_metric_validation():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(x, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        mmd2(x, torch.full((10, 2), float("nan")))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2(x, x + 1, bandwidth=0.0)
    with pytest.raises(ValueError, match="coincide"):
        mmd2(x, x)
    grid = ExactGrid(Boltzmann(make_toy("ring"), 1.0), extent=1.5, n=11)
    with pytest.raises(ValueError, match="samples must have shape"):
        grid_tv(torch.zeros(5, 3), grid)
    with pytest.raises(TypeError, match="ExactGrid"):
        grid_tv(x, None)


@pytest.mark.parametrize("n, m", [(2500, 300), (3000, 3000), (500, 700)])
def test_mmd2_and_the_median_bandwidth_are_symmetric(n, m):
    """The bandwidth pools points of both clouds symmetrically, so swapping x and y changes nothing,
    even when x alone has more than max_points points (where cat([x, y])[:2000] would ignore y)."""
    x, y = gaussian(n, [0.0, 0.0], 1.0, 1), gaussian(m, [3.0, 0.0], 2.0, 2)
    assert median_bandwidth(x, y) == median_bandwidth(y, x)
    assert mmd2(x, y) == pytest.approx(mmd2(y, x), rel=1e-12, abs=1e-15)
    assert median_bandwidth(x, y) > 1.2 * median_bandwidth(x)  # y's wider, shifted cloud is seen
