"""Score any posterior-mean estimator against the exact answer: bias², variance and the two references.

An estimator of mu1 = E[x1 | x_t] is worth its cost only if it beats what needs no estimator at all.
For each flow time t we draw x_t from the exact marginal p_t, repeat each row ``reps`` times, and split
the mean squared error into its two parts::

    MSE      = E_{x_t} E |mu1_hat - mu1|^2              (over x_t ~ p_t and the estimator's randomness)
    bias^2   = E_{x_t} |E[mu1_hat | x_t] - mu1|^2        (E[. | x_t] = average over the reps of one row)
    variance = E_{x_t} E |mu1_hat - E[mu1_hat | x_t]|^2  (MSE = bias^2 + variance)

next to two references:

- ``posterior_var`` = E_{x_t} tr Cov(x1 | x_t): the error of ONE exact posterior draw used as the
  estimate (what a sampler that knew q1 would regress onto). An importance-sampling estimator with
  K draws that does worse than a single exact draw has collapsed weights.
- ``constant_mse`` = E_{x_t} |E_p1[x1] - mu1|^2: the error of ignoring x_t altogether.

All four are reported in x1 units and in the units the network regresses (``kind``: "velocity" for a
flow policy, "x0" (epsilon) for a diffusion policy, "score"): each target is affine in mu1,
y = a_t ⊙ mu1 + b_t(x_t), so errors scale by a_t per coordinate (1 / (1 - t) for the linear-flow
velocity, which is why small errors near t = 1 matter).

The exact answers come from :func:`rfm_teach.targets.exact_answers` (closed form for Gaussians, 1-D
quadrature for product targets in any dimension, a 2D grid otherwise). Used by the tests,
``benchmarks/estimators.py`` and notebooks 03–05.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .paths import TARGET_KINDS, GaussianPath

__all__ = ["Score", "score_estimates", "score_estimator", "target_slope"]


@dataclass(frozen=True)
class Score:
    """Error of one estimator at one t, in one unit (``kind``). All values are sums over coordinates."""

    kind: str
    mse: float
    bias2: float
    variance: float
    posterior_var: float
    constant_mse: float

    @property
    def over_one_draw(self) -> float:
        """MSE / posterior_var: below 1 means better than one exact posterior draw."""
        return self.mse / self.posterior_var

    def as_dict(self) -> dict:
        return {**asdict(self), "over_one_draw": self.over_one_draw}


def target_slope(path: GaussianPath, x_t: Tensor, t: Tensor, kind: str) -> Tensor:
    """a_t in y = a_t mu1 + b_t(x_t) for the regression target ``kind``; shape of ``x_t``."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {kind!r}; expected one of {TARGET_KINDS}")
    one, zero = torch.ones_like(x_t), torch.zeros_like(x_t)
    return path.convert(one, x_t, t, src="x1", dst=kind) - path.convert(zero, x_t, t, src="x1", dst=kind)


def score_estimates(estimates: Tensor, x_t: Tensor, t: float, exact, path: GaussianPath,
                    kinds: tuple[str, ...] = ("x1",)) -> dict[str, Score]:
    """Score estimates of shape (rows, reps, d) made at the points ``x_t`` (rows, d) against ``exact``.

    ``exact`` is any object with ``mean()``, ``posterior_mean(x_t, t, path)`` and
    ``posterior_variance(x_t, t, path)`` (see :func:`rfm_teach.targets.exact_answers`).
    Returns one :class:`Score` per requested kind.
    """
    if estimates.dim() != 3 or estimates.shape[0] != x_t.shape[0] or estimates.shape[2] != x_t.shape[1]:
        raise ValueError(f"estimates must have shape (rows, reps, d) = ({x_t.shape[0]}, reps, {x_t.shape[1]}); "
                         f"got {tuple(estimates.shape)}")
    x_t = x_t.to(torch.float64)
    est = estimates.to(torch.float64)
    mu = exact.posterior_mean(x_t, t, path)  # (rows, d)
    var = exact.posterior_variance(x_t, t, path)
    prior_mean = exact.mean().to(torch.float64)
    tt = torch.full((x_t.shape[0], 1), float(t), dtype=torch.float64)
    out = {}
    for kind in kinds:
        a = target_slope(path, x_t, tt, kind)  # (rows, d)
        err = a[:, None] * (est - mu[:, None])  # (rows, reps, d)
        mean_err = err.mean(1)
        out[kind] = Score(
            kind=kind,
            mse=float((err**2).sum(-1).mean()),
            bias2=float((mean_err**2).sum(-1).mean()),
            variance=float(((err - mean_err[:, None]) ** 2).sum(-1).mean()),
            posterior_var=float((a**2 * var).sum(-1).mean()),
            constant_mse=float(((a * (prior_mean - mu)) ** 2).sum(-1).mean()),
        )
    return out


def score_estimator(
    estimator: Callable[[Tensor, float, torch.Generator], Tensor | dict[str, Tensor]],
    exact,
    t: float,
    *,
    path: GaussianPath,
    rows: int = 20,
    reps: int = 20,
    generator: torch.Generator | None = None,
    kinds: tuple[str, ...] = ("x1",),
) -> dict[str, dict[str, Score]]:
    """Draw ``rows`` points x_t ~ p_t, call ``estimator(x_rep, t, generator)`` once on each row repeated
    ``reps`` times, and score the result.

    ``estimator`` returns estimates of mu1 of shape (rows * reps, d) (row i's repeats are consecutive), or
    a dict name -> such a tensor to score several estimators made from the same draws (a paired
    comparison). Returns {name: {kind: Score}} (the name is "estimate" for a single tensor).

    Example::

        exact = exact_answers(target)
        scores = score_estimator(lambda x, t, g: posterior_mean(target, x, t, K=64, generator=g).mean,
                                 exact, 0.1, path=LinearFlow(), generator=torch.Generator().manual_seed(0))
        scores["estimate"]["x1"].over_one_draw
    """
    for name, value in (("rows", rows), ("reps", reps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if reps < 2:
        raise ValueError("reps must be >= 2 to separate bias from variance")
    x_t = exact.marginal_sample(rows, t, path, generator)
    result = estimator(x_t.repeat_interleave(reps, 0), t, generator)
    named = result if isinstance(result, dict) else {"estimate": result}
    return {name: score_estimates(value.reshape(rows, reps, -1), x_t, t, exact, path, kinds)
            for name, value in named.items()}
