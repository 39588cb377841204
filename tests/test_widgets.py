"""Tests of rfm_teach.widgets: the pure plotting functions against exact answers, and the explorers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets
import matplotlib.pyplot as plt
import pytest
import torch

from rfm_teach import Boltzmann, ExactGrid, LinearFlow, posterior_mean
from rfm_teach.targets import make_toy
from rfm_teach.widgets import (
    K_CHOICES,
    EstimatorView,
    TemperatureView,
    estimator_explorer,
    plot_estimator,
    plot_temperature,
    temperature_explorer,
)

N = 61  # a coarse grid keeps these tests fast; exactness is tested in test_targets


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_temperature_on_axes_is_the_normalised_grid_density():
    fig, ax = plt.subplots()
    view = plot_temperature(ax, "two_moons", temperature=0.5, n=N)
    q = make_toy("two_moons")
    grid = ExactGrid(Boltzmann(q, 0.5), extent=q.extent, n=N)
    assert isinstance(view, TemperatureView)
    torch.testing.assert_close(view.density, grid.density())
    assert view.log_normaliser == pytest.approx(grid.log_normaliser)
    assert float(view.density.sum()) * grid.cell == pytest.approx(1.0)
    assert len(ax.images) == 1


def test_plot_temperature_on_figure_adds_the_slice_panel_and_entropy_grows():
    fig = plt.figure()
    view = plot_temperature(fig, "ring", temperature=1.0, n=N)
    assert len(fig.axes) == 2
    assert len(fig.axes[1].lines) == 3  # this temperature, x10 and x0.1
    hotter = plot_temperature(plt.subplots()[1], "ring", temperature=3.0, n=N)
    assert hotter.entropy > view.entropy


def test_plot_estimator_matches_the_library_and_the_exact_grid():
    fig = plt.figure()
    x_t = torch.tensor([0.3, -0.2], dtype=torch.float64)
    view = plot_estimator(fig, "ring", 1.0, t=0.6, K=32, cv="auto", seed=3, x_t=x_t, n=N)
    assert isinstance(view, EstimatorView)
    assert len(fig.axes) == 2

    q = make_toy("ring")
    target = Boltzmann(q, 1.0)
    exact = ExactGrid(target, extent=q.extent, n=N).posterior_mean(x_t[None], 0.6, LinearFlow())[0]
    est = posterior_mean(target, x_t[None], 0.6, path=LinearFlow(), K=32, cv="auto", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(view.exact, exact)
    torch.testing.assert_close(view.estimate, est.mean[0])
    assert view.error == pytest.approx(float((est.mean[0] - exact).norm()))
    assert view.ess == pytest.approx(float(est.ess[0]))
    assert float(view.weights.sum()) == pytest.approx(1.0)
    assert view.weights.shape == (32,)


def test_plot_estimator_same_seed_gives_every_cv_the_same_x_t_and_draws():
    views = {cv: plot_estimator(plt.subplots()[1], "ring", 1.0, t=0.5, K=16, cv=cv, seed=7, n=N) for cv in ("none", "gradient", "plugin", "auto", 0.5)}
    first = views["none"]
    for view in views.values():
        torch.testing.assert_close(view.x_t, first.x_t)
        torch.testing.assert_close(view.weights, first.weights)
        torch.testing.assert_close(view.exact, first.exact)
    assert not torch.equal(views["gradient"].estimate, first.estimate)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"toy": "spiral"}, ValueError, "unknown toy"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"t": 1.0}, ValueError, "strictly inside"),
        ({"t": 0.0}, ValueError, "strictly inside"),
        ({"cv": "optimal"}, ValueError, "unknown cv"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"x_t": torch.zeros(3)}, ValueError, "one 2D point"),
    ],
)
def test_plot_estimator_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_estimator(plt.subplots()[1], **{"n": N, **kwargs})


def test_plot_functions_reject_non_matplotlib_targets_and_used_figures():
    with pytest.raises(TypeError, match="Axes or Figure"):
        plot_temperature("not an axes", n=N)
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="empty Figure"):
        plot_estimator(fig, n=N)


def test_temperature_explorer_builds_and_recomputes():
    box = temperature_explorer("ring", temperature=1.0, n=N)
    assert isinstance(box, ipywidgets.interactive)
    sliders = [w for w in box.kwargs_widgets if isinstance(w, ipywidgets.FloatSlider)]
    assert len(sliders) == 1 and sliders[0].continuous_update is False
    first = box.result.entropy
    sliders[0].value = 1.0  # log10 temperature = 1, i.e. temperature 10
    assert box.result.entropy > first
    with pytest.raises(ValueError, match="unknown toy"):
        temperature_explorer("spiral")


def test_estimator_explorer_builds_and_recomputes():
    box = estimator_explorer("two_moons", temperature=1.0, n=N)
    assert isinstance(box, ipywidgets.interactive)
    by_name = {w.description: w for w in box.kwargs_widgets}
    assert set(by_name) == {"t", "K", "cv", "seed"}
    for name in ("t", "K", "seed"):
        assert by_name[name].continuous_update is False
    assert tuple(by_name["K"].options) == K_CHOICES
    assert box.result.weights.shape == (64,)
    by_name["K"].value = 16
    assert box.result.weights.shape == (16,)
    before = box.result.x_t.clone()
    by_name["t"].value = 0.8
    assert not torch.equal(box.result.x_t, before)
