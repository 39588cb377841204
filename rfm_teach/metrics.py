"""Distances between a sample cloud and a target: sliced Wasserstein-2, MMD², grid total variation.

These are the sample-based distances of the paper's 2D toy experiment (arXiv 2601.08136: sliced Wasserstein
and MMD²; the third, Sinkhorn, is replaced here by an exact-grid total variation, which needs no solver
and uses the exact density that :class:`~rfm_teach.targets.ExactGrid` gives us).

- :func:`sliced_wasserstein`: SW2(P, Q) = sqrt(E_theta W2^2(theta·P, theta·Q)), theta uniform on the
  unit sphere. Closed form for N(m1, I) vs N(m2, I): |m1 - m2| / sqrt(d).
- :func:`mmd2`: unbiased MMD^2 with the Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 h^2)). Closed
  form for N(m1, s^2 I) vs N(m2, s^2 I): 2 (h^2 / (h^2 + 2 s^2))^(d/2) (1 - exp(-|m1 - m2|^2 / (2 (h^2 + 2 s^2)))).
- :func:`grid_tv`: (1/2) Σ_bins |p_hat(bin) - p(bin)| on coarse bins of the exact grid; 0 when the
  histogram equals the exact bin masses.

Every estimate from N samples carries sampling noise: even exact samples have SW, TV > 0. Compare
a policy with a second draw of exact samples (the "noise floor"), as ``benchmarks/fixed_target.py`` does.

Shapes: point clouds ``x`` (N, d), ``y`` (M, d). Randomness (projections) through a ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .targets import ExactGrid

__all__ = ["sliced_wasserstein", "median_bandwidth", "mmd2", "grid_tv"]


def _check_clouds(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, d); got {type(v).__name__}")
        if v.dim() != 2 or v.shape[0] < 2:
            raise ValueError(f"{name} must have shape (N, d) with N >= 2; got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or inf")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d; got {x.shape[1]} and {y.shape[1]}")
    return x.to(torch.float64), y.to(torch.float64)


def _quantiles(v: Tensor, n: int) -> Tensor:
    """Empirical quantile function of each column of v (N, P) at the n mid-levels (i + 1/2)/n. (n, P)."""
    sorted_v = v.sort(0).values
    if v.shape[0] == n:
        return sorted_v
    levels = (torch.arange(n, dtype=v.dtype) + 0.5) / n
    return torch.quantile(sorted_v, levels, dim=0)


def sliced_wasserstein(x: Tensor, y: Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance between two point clouds.

    Equation::

        SW2(x, y)^2 = (1/P) Σ_p W2^2(<theta_p, x>, <theta_p, y>),   theta_p uniform on the unit sphere

    where the 1-D W2^2 is the mean squared difference of sorted projections (of matched quantiles
    when N != M). For N(m1, I) vs N(m2, I), SW2 = |m1 - m2| / sqrt(d).

    Shapes: ``x`` (N, d), ``y`` (M, d). Returns a float (same units as the points).
    """
    x, y = _check_clouds(x, y)
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be an int >= 1; got {n_projections!r}")
    theta = torch.randn(x.shape[1], n_projections, dtype=torch.float64, generator=generator)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = max(x.shape[0], y.shape[0])
    qx, qy = _quantiles(x @ theta, n), _quantiles(y @ theta, n)
    return float(((qx - qy) ** 2).mean().sqrt())


def _spread(v: Tensor, n: int) -> Tensor:
    """n rows of v at evenly spaced indices (all of v when n >= len(v)): deterministic, not just the first."""
    if n >= v.shape[0]:
        return v
    return v[torch.linspace(0, v.shape[0] - 1, n).round().long()]


def median_bandwidth(x: Tensor, y: Tensor | None = None, *, max_points: int = 2000) -> float:
    """Median heuristic: h = median pairwise distance of the pooled points, at most ``max_points`` of them.

    The budget is split symmetrically: each cloud gives up to max_points // 2 evenly spaced points, and
    a cloud smaller than that leaves the rest to the other. So the pooled set, and h, are the same for
    (x, y) as for (y, x), and ``mmd2(x, y) == mmd2(y, x)``; taking the first max_points of cat([x, y])
    would ignore y whenever x alone has max_points points.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an int >= 2; got {max_points!r}")
    if y is None:
        pts = _spread(x, max_points)
    else:
        half = max_points // 2
        nx = min(x.shape[0], max(half, max_points - y.shape[0]))
        ny = min(y.shape[0], max(half, max_points - x.shape[0]))
        pts = torch.cat([_spread(x, nx), _spread(y, ny)], 0)
    pts = pts.to(torch.float64)
    d = torch.cdist(pts, pts, compute_mode="donot_use_mm_for_euclid_dist")  # exact, order-independent
    iu = torch.triu_indices(pts.shape[0], pts.shape[0], 1)
    h = float(d[iu[0], iu[1]].median())
    if not h > 0:
        raise ValueError("all points coincide: the median heuristic bandwidth is 0; pass bandwidth=")
    return h


def mmd2(x: Tensor, y: Tensor, *, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    Equation (k(a, b) = exp(-|a - b|^2 / (2 h^2)))::

        MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)

    Unbiased, so it can be slightly negative when x and y come from the same law. ``bandwidth`` h
    defaults to the median heuristic on the pooled points; fix it across a comparison (e.g. from the
    exact samples) so that values are comparable.

    Shapes: ``x`` (N, d), ``y`` (M, d). Returns a float.
    """
    x, y = _check_clouds(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0; got {bandwidth!r}")
    gamma = 1.0 / (2 * h * h)

    def mean_k(a: Tensor, b: Tensor, same: bool) -> float:
        k = torch.exp(-gamma * torch.cdist(a, b).pow(2))
        if same:
            n = a.shape[0]
            return float((k.sum() - k.diagonal().sum()) / (n * (n - 1)))
        return float(k.mean())

    return mean_k(x, x, True) + mean_k(y, y, True) - 2 * mean_k(x, y, False)


def grid_tv(samples: Tensor, grid: ExactGrid, *, bins: int = 30) -> float:
    """Total variation between a histogram of samples and the exact density of ``grid``, on coarse bins.

    Equation::

        TV = (1/2) Σ_b |N_b / N - P_b|,   P_b = Σ_{grid cells in bin b} density * cell volume

    The box [-extent - h/2, extent + h/2]^d covered by the grid cells (h the grid spacing) is cut into
    about ``bins`` bins per axis, each a block of round(n / bins) whole cells; samples outside the box
    count as mass the target does not have. Coarse bins keep the histogram's own noise small: for
    exact samples E[TV] ≈ (1/2) sqrt(2 / (pi N)) Σ_b sqrt(P_b), which falls like 1 / sqrt(N).

    Shapes: ``samples`` (N, d) with d = grid.dim. Returns a float in [0, 1].
    """
    if not isinstance(grid, ExactGrid):
        raise TypeError(f"grid must be a rfm_teach.targets.ExactGrid; got {type(grid).__name__}")
    if not isinstance(samples, Tensor) or samples.dim() != 2 or samples.shape[1] != grid.dim or samples.shape[0] < 1:
        got = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"samples must have shape (N, {grid.dim}); got {got}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or inf")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1; got {bins!r}")
    # Bins are whole blocks of grid cells, so that a sample jittered inside a cell (ExactGrid.sample)
    # always falls in the bin that holds the cell's mass: no artefact at bin edges.
    h = float(grid.axis[1] - grid.axis[0])
    lo = -grid.extent - h / 2
    per_bin = max(1, round(grid.n / bins))
    n_bins = math.ceil(grid.n / per_bin)

    def bin_index(points: Tensor) -> tuple[Tensor, Tensor]:
        cell = torch.floor((points.to(torch.float64) - lo) / h).long()
        inside = ((cell >= 0) & (cell < grid.n)).all(-1)
        idx = cell.clamp(0, grid.n - 1) // per_bin
        flat = torch.zeros(points.shape[0], dtype=torch.long)
        for j in range(grid.dim):
            flat = flat * n_bins + idx[:, j]
        return flat, inside

    cell_mass = torch.softmax(grid.log_p, 0)  # exact mass of each grid cell, sums to 1
    flat, _ = bin_index(grid.points)
    exact = torch.bincount(flat, weights=cell_mass, minlength=n_bins**grid.dim)
    flat, inside = bin_index(samples)
    counts = torch.bincount(flat[inside], minlength=n_bins**grid.dim).to(torch.float64) / samples.shape[0]
    outside = 1.0 - float(inside.to(torch.float64).mean())
    return 0.5 * (float((counts - exact).abs().sum()) + outside)
