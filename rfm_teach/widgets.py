"""Explorers for the book: each one is a pure plotting function plus a thin ipywidgets wrapper.

The pure functions (:func:`plot_temperature`, :func:`plot_estimator`) draw into an ``Axes`` or a
``Figure`` you pass in and return the numbers they show, so a notebook can call them once with
defaults (the static book and nbval then always have a figure) and assert on the result. The
explorers (:func:`temperature_explorer`, :func:`estimator_explorer`) wrap them in
``ipywidgets.interactive`` using only widgets that exist in ipywidgets 7.7 (Colab) and 8.x; every
slider that triggers a recomputation has ``continuous_update=False``.

Derived in notebooks/01_boltzmann_policy.ipynb (temperature) and 05_stein_control_variates.ipynb
(estimator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .estimators import CV_MODES, posterior_mean
from .paths import GaussianPath, make_path
from .plotting import density_panel, style_of
from .targets import TOYS, Boltzmann, ExactGrid, make_toy

__all__ = [
    "TemperatureView",
    "EstimatorView",
    "plot_temperature",
    "plot_estimator",
    "temperature_explorer",
    "estimator_explorer",
    "K_CHOICES",
]

#: K values offered by the estimator explorer: powers of 4 from 4 to 1024 (the authors use K = 100).
K_CHOICES: tuple[int, ...] = (4, 16, 64, 256, 1024)


@dataclass(frozen=True)
class TemperatureView:
    """What :func:`plot_temperature` drew: the normalised density and two summaries of it.

    Attributes:
        density: normalised exp(Q / temperature) on the grid, shape (n, n), rows along a₂.
        entropy: differential entropy -∫ p log p (nats) by quadrature; it grows with the temperature.
        log_normaliser: log ∫ exp(Q / temperature) da over the grid.
    """

    density: torch.Tensor
    entropy: float
    log_normaliser: float


@dataclass(frozen=True)
class EstimatorView:
    """What :func:`plot_estimator` drew, for one noisy point x_t.

    Attributes:
        x_t: the noisy point, shape (d,). estimate: the estimator's mu1, shape (d,).
        exact: mu1 = E[x1 | x_t] by quadrature, shape (d,). weights: w_k, shape (K,).
        ess: effective sample size 1 / Σ w_k². error: Euclidean norm of estimate - exact.
    """

    x_t: torch.Tensor
    estimate: torch.Tensor
    exact: torch.Tensor
    weights: torch.Tensor
    ess: float
    error: float


def _axes(ax_or_fig: Axes | Figure, panels: int) -> list[Axes]:
    """One Axes as given, or ``panels`` side-by-side Axes added to an empty Figure."""
    if isinstance(ax_or_fig, Axes):
        return [ax_or_fig]
    if isinstance(ax_or_fig, Figure):
        if ax_or_fig.axes:
            raise ValueError("pass an empty Figure (its panels are created here) or a single Axes")
        return list(ax_or_fig.subplots(1, panels))
    raise TypeError(f"ax_or_fig must be a matplotlib Axes or Figure; got {type(ax_or_fig).__name__}")


def _check_toy(toy: str) -> None:
    if toy not in TOYS:
        raise ValueError(f"unknown toy {toy!r}; expected one of {sorted(TOYS)}")


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return value


def plot_temperature(ax_or_fig: Axes | Figure, toy: str = "ring", temperature: float = 1.0, *, n: int = 201) -> TemperatureView:
    """Draw the Boltzmann policy pi(a) ∝ exp(Q(a) / temperature) of a 2D toy, normalised by quadrature.

    Equation: pi(a) = exp(Q(a) / temperature) / Z, with Z = Σ_grid exp(Q / temperature) · cell.
    With an ``Axes`` it draws the density; with an empty ``Figure`` it adds a second panel, the slice
    of the density through its highest row (fixed a₂), at this temperature and, in grey, at 10x and
    0.1x it, so the dial's effect is visible in one picture.

    Shapes: the returned ``density`` is (n, n) on [-extent, extent]^2 of the toy.
    Defaults: ``n = 201`` points per axis resolve the ring's bumps (width 0.1) down to temperature
    about 0.05 on the toy's extent of 1.5.
    """
    _check_toy(toy)
    temperature = _check_positive("temperature", temperature)
    if n < 3:
        raise ValueError(f"n must be >= 3 grid points per axis; got {n}")
    axes = _axes(ax_or_fig, 2)
    q = make_toy(toy)
    grid = ExactGrid(Boltzmann(q, temperature), extent=q.extent, n=n)
    density = grid.density()
    p = density.reshape(-1)
    entropy = float(-(p * torch.log(p.clamp_min(1e-300))).sum() * grid.cell)
    density_panel(axes[0], density, q.extent)
    if len(axes) == 2:
        row = int(density.max(dim=1).values.argmax())
        a2 = round(float(grid.axis[row]), 2) + 0.0  # + 0.0 turns -0.0 into 0.0 for the label
        for factor, shade in ((10.0, "0.75"), (0.1, "0.45")):
            other = ExactGrid(Boltzmann(q, temperature * factor), extent=q.extent, n=n).density()[row]
            axes[1].plot(grid.axis.numpy(), other.numpy(), color=shade, label=f"temperature × {factor:g}")
        axes[1].plot(grid.axis.numpy(), density[row].numpy(), color="black", label=f"temperature = {temperature:g}")
        axes[1].set_xlabel(f"a₁ (action), at a₂ = {a2:.2f}")
        axes[1].set_ylabel("π(a) (density)")
        # A framed legend: the narrow peaks of small temperatures run through any corner of the panel.
        axes[1].legend(loc="upper left", fontsize=9, frameon=True, facecolor="white", framealpha=0.9)
    return TemperatureView(density, entropy, grid.log_normaliser)


def plot_estimator(
    ax_or_fig: Axes | Figure,
    toy: str = "ring",
    temperature: float = 1.0,
    t: float = 0.5,
    K: int = 64,
    cv: str | float = "auto",
    seed: int = 0,
    *,
    path: str | GaussianPath = "linear",
    x_t: torch.Tensor | None = None,
    n: int = 201,
) -> EstimatorView:
    """Draw one posterior-mean estimate: the K weighted draws on the exact posterior q1(x1 | x_t).

    Equations (see :mod:`rfm_teach.estimators`)::

        x1^k = (x_t - beta_t x0^k) / alpha_t,   w = softmax(log p1(x1^k)),   ESS = 1 / Σ w_k²
        estimate = Σ_k w_k (x1^k + c ⊙ s1^k);   exact mu1 = Σ_grid q1(x1 | x_t) x1

    The left (or only) panel shows q1 on the toy's grid, each draw as a dot whose area is its weight,
    the exact mu1 (black star) and the estimate (the estimator's colour), with ESS and the error.
    With an empty ``Figure`` a second panel shows the weights sorted from largest to smallest.

    Shapes: ``x_t`` (optional) is (d,) or (1, d) with d = 2; by default it is drawn from the exact
    marginal p_t with ``seed``, before the K draws, so changing K or cv keeps the same x_t, and the
    same seed gives every cv the same draws (a fair comparison).
    Defaults: the ring at temperature 1 (six separated modes), t = 0.5 and K = 64 where the
    estimators already differ visibly; ``n = 201`` grid points per axis.
    """
    _check_toy(toy)
    temperature = _check_positive("temperature", temperature)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < 1):
        raise ValueError(f"t must be a float strictly inside (0, 1) (t = 1 is data); got {t!r}")
    if isinstance(cv, str) and cv not in CV_MODES:
        raise ValueError(f"unknown cv {cv!r}; expected one of {CV_MODES} or a float")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    path = make_path(path) if isinstance(path, str) else path
    axes = _axes(ax_or_fig, 2)
    q = make_toy(toy)
    target = Boltzmann(q, temperature)
    grid = ExactGrid(target, extent=q.extent, n=n)
    gen = torch.Generator().manual_seed(seed)
    if x_t is None:
        x_t = grid.marginal_sample(1, t, path, generator=gen)
    else:
        x_t = torch.as_tensor(x_t, dtype=torch.float64).reshape(1, -1)
        if x_t.shape != (1, 2):
            raise ValueError(f"x_t must hold one 2D point, shape (2,) or (1, 2); got {tuple(x_t.shape)}")
    est = posterior_mean(target, x_t, t, path=path, K=K, cv=cv, generator=gen)
    exact = grid.posterior_mean(x_t, t, path)[0]
    weights = est.draws.w[0]
    estimate = est.mean[0]
    error = float((estimate - exact).norm())
    ess = float(est.ess[0])

    ax = axes[0]
    posterior = torch.exp(grid.posterior_log_weights(x_t, t, path)[0]).reshape(n, n) / grid.cell
    density_panel(ax, posterior, q.extent)
    ax.set_xlabel("a₁ (clean action x₁)")
    ax.set_ylabel("a₂ (clean action x₁)")
    draws, w_np = est.draws.x1[0].numpy(), weights.numpy()  # matplotlib wants arrays, not tensors
    ax.scatter(draws[:, 0], draws[:, 1], s=4 + 400 * w_np, facecolors="none", edgecolors="white", linewidths=0.8)
    style = style_of(cv) if isinstance(cv, str) else {"color": "#D55E00", "label": f"c = {float(cv):g}"}
    ax.plot(*exact.numpy(), marker="*", markersize=16, color="black", markeredgecolor="white", linestyle="none", label="exact μ₁")
    ax.plot(*estimate.numpy(), marker="o", markersize=9, color=style["color"], markeredgecolor="white", linestyle="none", label=style["label"])
    ax.plot(*x_t[0].numpy(), marker="x", markersize=9, color="#F0E442", linestyle="none", label="x_t")
    ax.set_xlim(-q.extent, q.extent)
    ax.set_ylim(-q.extent, q.extent)
    ax.text(
        0.02, 0.98, f"t = {t:g}, K = {K}\nESS = {ess:.1f}\n|error| = {error:.3g}",
        transform=ax.transAxes, va="top", ha="left", fontsize=9, color="white",
    )
    ax.legend(loc="lower right", fontsize=9, frameon=True, facecolor="white", framealpha=0.85)  # readable on any density
    if len(axes) == 2:
        sorted_w = torch.sort(weights, descending=True).values.numpy()
        axes[1].bar(range(1, K + 1), sorted_w, color=style["color"], width=1.0)
        axes[1].set_xlabel("k (draw, sorted by weight)")
        axes[1].set_ylabel("w_k (normalised weight)")
        axes[1].axhline(1.0 / K, color="0.4", linestyle=":", label="uniform 1/K")
        axes[1].legend(loc="upper right", fontsize=9)
    return EstimatorView(x_t[0], estimate, exact, weights, ess, error)


def _show(fig: Figure) -> None:
    """Display a finished figure in the widget's output area and free it (works on any backend)."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def temperature_explorer(toy: str = "ring", temperature: float = 1.0, *, n: int = 201):
    """An ipywidgets explorer over :func:`plot_temperature`: a log slider for the temperature and a toy menu.

    Returns the ``ipywidgets.interactive`` box (display it as the last expression of a cell); its
    ``.result`` holds the :class:`TemperatureView` of the current setting. The slider spans
    temperatures 0.05 to 20 on a log scale; it recomputes on release (``continuous_update=False``).
    """
    import ipywidgets as w

    _check_toy(toy)
    temperature = _check_positive("temperature", temperature)

    def show(toy: str, log10_temperature: float) -> TemperatureView:
        fig = plt.figure(figsize=(10, 4))
        view = plot_temperature(fig, toy, 10.0**log10_temperature, n=n)
        _show(fig)
        return view

    return w.interactive(
        show,
        toy=w.Dropdown(options=sorted(TOYS), value=toy, description="toy"),
        log10_temperature=w.FloatSlider(
            value=math.log10(temperature), min=math.log10(0.05), max=math.log10(20.0), step=0.05,
            description="log₁₀ temp.", continuous_update=False,
        ),
    )


def estimator_explorer(toy: str = "ring", temperature: float = 1.0, *, path: str = "linear", n: int = 201):
    """An ipywidgets explorer over :func:`plot_estimator`: sliders for t, K and the seed, a menu for cv.

    Returns the ``ipywidgets.interactive`` box; its ``.result`` holds the :class:`EstimatorView`.
    t spans 0.05 to 0.95 (the endpoints are singular), K takes the values in :data:`K_CHOICES`;
    all sliders recompute on release (``continuous_update=False``).
    """
    import ipywidgets as w

    _check_toy(toy)
    temperature = _check_positive("temperature", temperature)
    path_obj = make_path(path)

    def show(t: float, K: int, cv: str, seed: int) -> EstimatorView:
        fig = plt.figure(figsize=(10, 4.5))
        view = plot_estimator(fig, toy, temperature, t, K, cv, seed, path=path_obj, n=n)
        _show(fig)
        return view

    return w.interactive(
        show,
        t=w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="t", continuous_update=False),
        K=w.SelectionSlider(options=list(K_CHOICES), value=64, description="K", continuous_update=False),
        cv=w.Dropdown(options=list(CV_MODES), value="auto", description="cv"),
        seed=w.IntSlider(value=0, min=0, max=20, description="seed", continuous_update=False),
    )
