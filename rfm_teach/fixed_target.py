"""Train a stateless flow or diffusion policy onto a fixed 2D Boltzmann target: the paper's toy experiment.

The paper (notes §6.2) samples a 2D two-moons energy with RFM, iDEM (gradient-expectation) and QNE
(noise-expectation) at the same posterior-estimation budget and reports sliced Wasserstein, MMD² and
a Sinkhorn distance (values unknown to us). Here the three are one policy and one loss with the
estimator switch ``cv`` ("none" = QNE-style, "gradient" = iDEM-style, "auto"/"plugin" = RFM), and the
target is exact: :class:`~rfm_teach.targets.ExactGrid` gives its density and exact samples.

Choices (documented because they change the numbers):

- **Where u_t is drawn.** Each step regresses at u_t = alpha_t u1 + beta_t u0 where the endpoints u1
  are the policy's *own current samples* (``steps_sample`` Euler/DDIM steps, no gradient), as in the
  authors' on-policy RL loop (``rfm_on_policy: true``). Any full-support distribution of u_t has the
  same minimiser (notes §1.2); on-policy endpoints concentrate the effort where the policy puts mass.
- **No squash.** The toys live on R^2 (their mass sits inside ``[-extent, extent]^2``), so the policy
  is unsquashed and the target is ``Boltzmann(toy, temperature, squash=False)``.
- **Same budget.** Every cv mode uses the same K draws per row and the same number of policy samples;
  the gradient modes also spend one backward pass through Q per step (free for a toy Q).
- **Evaluation.** ``n_eval`` policy samples against ``n_eval`` exact samples drawn once from the grid
  with a fixed seed; SW with fixed projections, MMD² with a bandwidth fixed from the exact samples
  (median heuristic), TV on 30 x 30 bins. The "noise floor" (a second exact draw against the first)
  is reported beside the curves.

Derived in notebooks/06_fixed_target.ipynb; run at scale by ``benchmarks/fixed_target.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .metrics import grid_tv, median_bandwidth, mmd2, sliced_wasserstein
from .policies import DiffusionPolicy, FlowPolicy
from .targets import Boltzmann, ExactGrid, make_toy

__all__ = ["FitResult", "exact_reference", "evaluate", "fit_to_target", "POLICIES"]

POLICIES = {"flow": FlowPolicy, "diffusion": DiffusionPolicy}
ENDPOINTS = ("policy", "mixed")
EXACT = "exact"  # cv value for the oracle: the exact grid posterior mean instead of an estimate
_EVAL_SEED_OFFSET = 10_000  # eval draws use their own generators, so evaluation never shifts training noise


@dataclass
class FitResult:
    """Distance curves of one fit. ``curves`` is a list of rows, one per evaluation, with keys
    step, sw, mmd2, tv, outside (fraction of samples outside the grid's box), loss, ess and c (means
    since the last evaluation; None at step 0, and ess and c None for the exact oracle), wall_s.

    ``floor`` holds the same distances between two independent exact draws (the sampling-noise floor).
    """

    toy: str
    policy: str
    cv: str | float
    K: int
    temperature: float
    seed: int
    curves: list[dict] = field(default_factory=list)
    floor: dict = field(default_factory=dict)
    samples: torch.Tensor | None = None  # final policy samples (n_eval, 2)
    model: torch.nn.Module | None = None

    def final(self) -> dict:
        """The last evaluation row."""
        return self.curves[-1]

    def to_rows(self) -> list[dict]:
        """Curve rows with the run's settings on each (for a CSV)."""
        meta = {k: v for k, v in asdict(self).items() if k not in ("curves", "floor", "samples", "model")}
        return [{**meta, **row} for row in self.curves]


def exact_reference(toy: str, temperature: float, *, n_eval: int, seed: int, grid_n: int = 301):
    """The target, its exact grid, ``n_eval`` exact samples, the MMD bandwidth and the noise floor."""
    landscape = make_toy(toy)
    target = Boltzmann(landscape, temperature, squash=False)
    grid = ExactGrid(target, extent=landscape.extent, n=grid_n)
    g = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    ref = grid.sample(n_eval, g)
    bandwidth = median_bandwidth(ref)
    second = grid.sample(n_eval, g)
    floor = _distances(second, ref, grid, bandwidth, seed)
    return target, grid, ref, bandwidth, floor


def _distances(samples: torch.Tensor, ref: torch.Tensor, grid: ExactGrid, bandwidth: float, seed: int) -> dict:
    proj = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET + 1)  # same projections at every evaluation
    samples = samples.to(torch.float64)
    return {
        "sw": sliced_wasserstein(samples, ref, generator=proj),
        "mmd2": mmd2(samples, ref, bandwidth=bandwidth),
        "tv": grid_tv(samples, grid),
    }


def evaluate(model, ref: torch.Tensor, grid: ExactGrid, bandwidth: float, *, temperature: float, n_eval: int,
             steps: int, seed: int, step: int) -> tuple[dict, torch.Tensor]:
    """Sample ``n_eval`` points from the policy and measure their distances to the exact samples ``ref``."""
    g = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET + 2 + step)
    samples = model.sample(torch.zeros(1, 0), n_eval, temperature=temperature, steps=steps, generator=g)[0]
    if not bool(torch.isfinite(samples).all()):
        return {"sw": math.inf, "mmd2": math.inf, "tv": 1.0}, samples
    return _distances(samples, ref, grid, bandwidth, seed), samples


def fit_to_target(
    toy: str = "two_moons",
    *,
    cv: str | float = "auto",
    K: int = 100,
    steps: int = 2000,
    temperature: float = 1.0,
    batch: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    policy: str = "flow",
    eval_every: int = 200,
    n_eval: int = 2000,
    sample_steps: int = 20,
    hidden: int = 128,
    n_blocks: int = 2,
    grid_n: int = 301,
    endpoints: str = "policy",
    oracle_grid_n: int = 101,
    progress: bool = True,
) -> FitResult:
    """Train a stateless policy (obs_dim 0, no squash) onto exp(Q_toy / temperature) on R^2.

    Each step: u1 = policy samples (no grad), then ``policy.loss(obs, u1, target, K=K, cv=cv)`` and one
    Adam step. Every ``eval_every`` steps (and at step 0) the policy's samples are compared with exact
    samples by SW2, MMD² and TV (see :mod:`rfm_teach.metrics`).

    Args:
        toy: a 2D toy of :data:`rfm_teach.targets.TOYS` ("two_moons", "ring", "quadratic").
        cv: the estimator: "none", "gradient", "plugin", "auto" or a float (see ``posterior_mean``), or
            "exact": the oracle, regressing on the exact grid posterior mean (``oracle_grid_n`` points
            per axis; slow), which shows what the network and sampler reach with a perfect estimator.
        K: importance draws per row (the same budget for every cv).
        steps, batch, lr: Adam steps, rows per step, learning rate.
        seed: seeds the network initialisation, the training noise and the evaluation draws.
        policy: "flow" (Euler sampler) or "diffusion" (DDIM sampler).
        eval_every, n_eval: evaluation period (steps) and number of samples per evaluation.
        sample_steps: sampler steps, for the training endpoints and the evaluation (the paper's toy:
            RFM 20).
        hidden, n_blocks: network size (the authors' RL actor has 256 and 2; 128 is enough in 2D).
        grid_n: points per axis of the exact grid.
        endpoints: "policy" (the policy's own samples, the authors' on-policy choice) or "mixed" (half
            of them replaced by uniform points on the grid's box, for coverage).
        oracle_grid_n: grid points per axis of the exact posterior mean used when ``cv="exact"``.
        progress: show a tqdm bar.

    Returns:
        :class:`FitResult` with the curves, the noise floor, the final samples and the model.
    """
    if endpoints not in ENDPOINTS:
        raise ValueError(f"endpoints must be one of {ENDPOINTS}; got {endpoints!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}; got {policy!r}")
    for name, value, low in (("steps", steps, 0), ("batch", batch, 1), ("eval_every", eval_every, 1),
                             ("n_eval", n_eval, 2), ("sample_steps", sample_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    if not (lr > 0):
        raise ValueError(f"lr must be > 0; got {lr!r}")
    target, grid, ref, bandwidth, floor = exact_reference(toy, temperature, n_eval=n_eval, seed=seed, grid_n=grid_n)

    exact_mu1 = None
    if cv == EXACT:
        oracle = ExactGrid(target, extent=grid.extent, n=oracle_grid_n)
        exact_mu1 = lambda u_t, t: oracle.posterior_mean(u_t, t, model.path)  # noqa: E731
    torch.manual_seed(seed)  # network initialisation only; all training noise goes through `gen`
    model = POLICIES[policy](0, 2, hidden=hidden, n_blocks=n_blocks, squash=False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    obs = torch.zeros(batch, 0)
    result = FitResult(toy, policy, cv, K, float(temperature), seed, floor=floor, model=model)

    sums = {"loss": 0.0, "ess": 0.0, "c": 0.0}
    count, start = 0, time.perf_counter()

    def record(step: int) -> None:
        nonlocal count, sums
        dist, samples = evaluate(model, ref, grid, bandwidth, temperature=temperature, n_eval=n_eval,
                                 steps=sample_steps, seed=seed, step=step)
        # None where nothing was measured: before the first step, and ess/c for the exact oracle
        means = {"loss": sums["loss"] / count if count else None}
        means.update({k: sums[k] / count if count and cv != EXACT else None for k in ("ess", "c")})
        outside = float((samples.abs() > grid.extent).any(-1).double().mean())
        result.curves.append({"step": step, **dist, "outside": outside, **means, "wall_s": time.perf_counter() - start})
        result.samples = samples
        sums, count = {k: 0.0 for k in sums}, 0

    record(0)
    bar = tqdm(range(1, steps + 1), desc=f"{toy} {policy} cv={cv}", disable=not progress, leave=False)
    for step in bar:
        u1 = model.sample(obs[:1], batch, temperature=temperature, steps=sample_steps, generator=gen)[0]
        if endpoints == "mixed":  # half policy samples (clamped to the box), half uniform on the box
            box = grid.extent
            uni = (2 * torch.rand(batch, 2, generator=gen) - 1) * box
            u1 = torch.cat([u1[: batch // 2].clamp(-box, box), uni[batch // 2 :]], 0)
        loss, info = model.loss(obs, u1, target, temperature=temperature, K=K, cv="none" if cv == EXACT else cv,
                                generator=gen, exact_mu1=exact_mu1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # the authors clip the actor at 10
        opt.step()
        sums["loss"] += loss.item()
        if info["ess"] is not None:
            sums["ess"] += info["ess"]
            sums["c"] += info["c"]
        count += 1
        if step % eval_every == 0 or step == steps:
            record(step)
            bar.set_postfix(sw=f"{result.curves[-1]['sw']:.3f}", tv=f"{result.curves[-1]['tv']:.3f}")
    bar.close()
    return result
