"""Train a stateless flow or diffusion policy onto a fixed Boltzmann target: the paper's toy experiment.

The paper (Section 6, toy experiment) samples a 2D two-moons energy with RFM, iDEM (gradient-expectation)
and QNE (noise-expectation) at the same posterior-estimation budget and reports sliced Wasserstein,
MMD² and a Sinkhorn distance. Here the estimators are one policy and one loss with two switches, ``cv``
("none" = QNE-style, "gradient" = iDEM-style, "plugin" = the paper's RFM, "auto" = ours) and
``proposal`` ("kernel" = the paper's reverse-kernel draws, "policy" = a defensive mixture that also
uses the policy's own samples), and the target is exact: :func:`~rfm_teach.targets.exact_answers` gives
its density, exact samples and exact posterior means (the oracle, ``cv="exact"``).

One configuration object, :class:`FitConfig`, holds every setting; :func:`fit_to_target` takes it,
and with ``out_dir`` writes the curves and a manifest (:func:`rfm_teach.results.write_manifest`) that
records the whole config. ``benchmarks/fixed_target.py`` builds its flags from the same dataclass.

Choices (documented because they change the numbers):

- **Where u_t is drawn.** Each step regresses at u_t = alpha_t u1 + beta_t u0 where the endpoints u1
  are the policy's *own current samples* (``endpoint_steps`` sampler steps, no gradient), as in the
  authors' on-policy RL loop (``rfm_on_policy: true`` in azizanlab/ReverseFlowMatching). Any
  full-support distribution of u_t has the same minimiser (the paper's Prop. 4.1); on-policy endpoints
  concentrate the effort where the policy puts mass.
- **The policy proposal.** With ``proposal="policy"`` the first ``M`` endpoints (fresh draws of the
  current policy) are passed to every row as ``prior_samples``: the policy is stateless, so one set of
  particles serves all rows, as the agent's M particles serve one state.
- **No squash.** The toys live on R^d (their mass sits inside ``[-extent, extent]^d``), so the policy is
  unsquashed and the target is ``Boltzmann(toy, temperature, squash=False)``.
- **Same budget.** Every estimator uses the same K draws per row; the gradient modes also spend one
  backward pass through Q per step (free for a toy Q).
- **Evaluation.** ``n_eval`` policy samples against ``n_eval`` exact samples drawn once with a fixed
  seed; SW2 with fixed projections, MMD² with a bandwidth fixed from the exact samples (median
  heuristic), TV on 30 bins per axis (2D: the grid's bins; d > 2: the mean over coordinates of the 1-D
  marginal TV, since a d-dimensional histogram is empty). The "floor" (a second exact draw of the same
  size against the first) is reported beside the curves.

Derived in notebooks/06_fixed_target.ipynb; run at scale by ``benchmarks/fixed_target.py``.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .estimators import MIXTURE, check_mixture
from .metrics import grid_tv, median_bandwidth, mmd2, sliced_wasserstein
from .paths import GaussianPath
from .policies import DiffusionPolicy, FlowPolicy, euler, time_grid
from .targets import Boltzmann, ExactGrid, ExactProduct, ProductLandscape, make_toy

__all__ = ["FitConfig", "FitResult", "GridOracle", "make_target", "exact_reference", "evaluate", "fit_to_target",
           "exact_sampler_distances", "POLICIES", "PROPOSALS", "estimator_label", "estimator_fields"]

POLICIES = {"flow": FlowPolicy, "diffusion": DiffusionPolicy}
ENDPOINTS = ("policy", "mixed")
PROPOSALS = ("policy", "kernel")
LR_SCHEDULES = ("cosine", "constant")
EXACT = "exact"  # cv value for the oracle: the exact posterior mean instead of an estimate
PRODUCT_PREFIX = "bimodal"  # toy "bimodal6" = ProductLandscape.bimodal(6), exact by 1-D quadrature
_EVAL_SEED_OFFSET = 10_000  # eval draws use their own generators, so evaluation never shifts training noise


@dataclass
class FitConfig:
    """Every setting of one fixed-target fit. The benchmark's flags and the manifest come from these fields.

    Defaults: the estimator is ours (``cv="auto"`` with ``proposal="policy"``). The model and budget are
    the smallest the oracle study found that puts the exact-posterior oracle within 2x of the exact-sample
    floor on two moons (``rfm_teach/results/fixed_target/oracle_capacity``: a 256-wide network with 3
    residual blocks, 2400 steps, cosine learning rate, the authors' time embedding emb(t)); 2-5 minutes per
    fit on one CPU thread. The first stored comparison (``compare_flow_*``) used 128 x 2, 800 steps and
    emb(1000 t), where the oracle ends about 4x above the floor: there the network, not the estimator,
    capped every fit.
    """

    toy: str = field(default="two_moons", metadata={"help": "two_moons, ring, quadratic, or bimodal<d> (a d-dim product target)"})
    policy: str = field(default="flow", metadata={"help": "flow (Euler sampler) or diffusion (VP path)"})
    cv: str = field(default="auto", metadata={"help": "none, gradient, plugin, auto, a float, or exact (the oracle)"})
    proposal: str = field(default="policy", metadata={
        "help": "policy: defensive mixture with M policy samples (ours); kernel: reverse kernel only (the paper's)"})
    mixture: tuple[float, float, float] = field(default=MIXTURE, metadata={
        "help": "proposal=policy: shares of the K draws from the kernel, the joint fit and the marginal fit"})
    adaptive_share: bool = field(default=True, metadata={
        "help": "proposal=policy: raise the kernel's share per row to its predicted efficiency (False: fixed shares)"})
    K: int = field(default=100, metadata={"help": "importance draws per row (the same for every estimator)"})
    M: int = field(default=32, metadata={"help": "policy samples passed as prior_samples (proposal=policy)"})
    steps: int = field(default=2400, metadata={"help": "Adam steps"})
    batch: int = field(default=256, metadata={"help": "rows per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine (to 0 over the steps) or constant"})
    temperature: float = field(default=1.0, metadata={"help": "Boltzmann temperature lambda"})
    seed: int = field(default=0, metadata={"help": "seeds the initialisation, the training noise and the evaluation"})
    hidden: int = field(default=256, metadata={"help": "network width"})
    n_blocks: int = field(default=3, metadata={"help": "residual blocks"})
    time_scale: float = field(default=1.0, metadata={"help": "t is embedded as sinusoid(time_scale * t) (1: the authors')"})
    t_min: float = field(default=0.01, metadata={"help": "t is kept in [t_min, 1 - t_min] (training and sampling)"})
    endpoint_steps: int = field(default=10, metadata={"help": "sampler steps for the training endpoints (the authors: 10)"})
    sample_steps: int = field(default=20, metadata={"help": "sampler steps for the evaluation (the paper's toy: 20)"})
    eval_every: int = field(default=400, metadata={"help": "evaluation period in steps"})
    n_eval: int = field(default=1000, metadata={"help": "samples per evaluation (and size of the exact reference)"})
    grid_n: int = field(default=301, metadata={"help": "points per axis of the exact grid (2D) used for TV"})
    oracle_grid_n: int = field(default=101, metadata={"help": "points per axis of the oracle's posterior-mean grid (2D)"})
    endpoints: str = field(default="policy", metadata={"help": "policy, or mixed (half uniform on the box)"})
    grad_clip: float = field(default=10.0, metadata={"help": "global gradient-norm clip (the authors: 10)"})

    def __post_init__(self) -> None:
        if isinstance(self.mixture, list):  # read back from a manifest (JSON)
            self.mixture = tuple(self.mixture)

    def validate(self) -> FitConfig:
        """Raise ValueError naming the first bad field; return self."""
        check_mixture(self.mixture)
        if self.endpoints not in ENDPOINTS:
            raise ValueError(f"endpoints must be one of {ENDPOINTS}; got {self.endpoints!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}; got {self.policy!r}")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}; got {self.proposal!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {self.lr_schedule!r}")
        if not isinstance(self.adaptive_share, bool):
            raise ValueError(f"adaptive_share must be True or False; got {self.adaptive_share!r}")
        for name, low in (("steps", 0), ("batch", 1), ("eval_every", 1), ("n_eval", 2), ("sample_steps", 1),
                          ("endpoint_steps", 1), ("K", 1), ("M", 2), ("grid_n", 3), ("oracle_grid_n", 3)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        for name in ("lr", "temperature", "time_scale", "grad_clip"):
            if not (getattr(self, name) > 0):
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        if self.proposal == "policy" and self.M > self.batch:
            raise ValueError(f"M (policy samples) must be <= batch; got M={self.M}, batch={self.batch}")
        make_target(self.toy, self.temperature)  # raises on an unknown toy
        return self

    @property
    def label(self) -> str:
        return estimator_label(self.cv, self.proposal)


def estimator_label(cv, proposal: str) -> str:
    """A short name for an estimator: the cv, with "+policy" when the policy proposal is used (not for the oracle)."""
    return str(cv) if cv == EXACT or proposal == "kernel" else f"{cv}+policy"


def estimator_fields(name: str) -> dict:
    """The FitConfig fields of an estimator name: "auto+policy" -> cv auto with the policy proposal,
    "plugin" -> cv plugin with the kernel-only proposal (the paper's), "exact" -> the oracle, "0.5" -> a fixed c."""
    cv, _, proposal = str(name).partition("+")
    try:
        cv = float(cv)
    except ValueError:
        pass
    return {"cv": cv, "proposal": proposal or "kernel"}


def make_target(toy: str, temperature: float):
    """(landscape, unsquashed Boltzmann target, dimension) for a toy name (2D toys or ``bimodal<d>``)."""
    if toy.startswith(PRODUCT_PREFIX) and toy[len(PRODUCT_PREFIX):].isdigit():
        landscape = ProductLandscape.bimodal(int(toy[len(PRODUCT_PREFIX):]))
        return landscape, Boltzmann(landscape, temperature, squash=False), landscape.dim
    landscape = make_toy(toy)
    return landscape, Boltzmann(landscape, temperature, squash=False), 2


class GridOracle:
    """The exact posterior mean mu1(u_t, t) for the oracle fit, fast enough to call every step.

    2D: quadrature on an ``n`` x ``n`` grid, written as one matrix product,
    log q1(x_g | x_t) = log p1(x_g) + (2 alpha x_t·x_g - alpha^2 |x_g|^2) / (2 beta^2) + const. Where the
    posterior is narrower than half a grid cell (sigma = beta/alpha < h/2, i.e. t within ~1 % of 1) the
    quadrature snaps to grid points, so there the small-noise expansion mu1 = x_t/alpha + sigma^2
    grad log p1(x_t/alpha) + O(sigma^4) is used instead (error below 3e-3 in velocity units on two moons
    at t = 0.99, against 0.46 for a 101-point grid). Product targets: exact 1-D quadrature per coordinate.
    """

    def __init__(self, target: Boltzmann, extent: float, n: int, dim: int) -> None:
        self.target = target
        if isinstance(target.q, ProductLandscape):
            self.product = ExactProduct(target, extent=extent, n=max(n, 2001))
            return
        self.product = None
        grid = ExactGrid(target, extent=extent, n=n)
        self.points = grid.points  # (G, 2) float64
        self.log_p = grid.log_p - torch.logsumexp(grid.log_p, 0)
        self.sq = (self.points**2).sum(-1)
        self.h = float(grid.axis[1] - grid.axis[0])

    def __call__(self, u_t: torch.Tensor, t: torch.Tensor, path: GaussianPath) -> torch.Tensor:
        if self.product is not None:
            return self.product.posterior_mean(u_t, t, path)
        x = u_t.detach().to(torch.float64)
        tt = t.detach().to(torch.float64)[:, None]
        a, b = path.alpha(tt), path.beta(tt)
        logits = self.log_p + (2 * a * (x @ self.points.T) - a**2 * self.sq) / (2 * b**2)
        mu = torch.softmax(logits, -1) @ self.points
        sigma = b / a
        centre = x / a
        _, grad = self.target.log_density_and_score(centre[:, None])
        expansion = centre + sigma**2 * grad[:, 0]
        return torch.where(sigma < self.h / 2, expansion, mu)


@dataclass
class FitResult:
    """Distance curves of one fit. ``curves`` is a list of rows, one per evaluation, with keys
    step, sw, mmd2, tv, outside (fraction of samples outside the box), loss, ess and c (means since the
    last evaluation; None at step 0, and ess and c None for the exact oracle), lr, wall_s.

    ``floor`` holds the same distances between two independent exact draws (the sampling-noise floor).
    """

    config: FitConfig
    curves: list[dict] = field(default_factory=list)
    floor: dict = field(default_factory=dict)
    samples: torch.Tensor | None = None  # final policy samples (n_eval, d)
    model: torch.nn.Module | None = None

    # the settings most tables group by, kept as attributes for convenience
    @property
    def toy(self) -> str:
        return self.config.toy

    @property
    def cv(self):
        return self.config.cv

    def final(self) -> dict:
        """The last evaluation row."""
        return self.curves[-1]

    def to_rows(self) -> list[dict]:
        """Curve rows with the run's identifying settings on each (for a CSV)."""
        c = self.config
        meta = {"toy": c.toy, "policy": c.policy, "estimator": c.label, "cv": c.cv, "proposal": c.proposal,
                "K": c.K, "temperature": c.temperature, "seed": c.seed}
        return [{**meta, **row} for row in self.curves]

    def save(self, out_dir: str | Path, *, command: str | None = None, wall_time_s: float | None = None) -> dict:
        """Write curves.csv, floor.csv, samples.csv (first 500) and manifest.json (full config) into ``out_dir``."""
        from .results import write_manifest

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "curves.csv", CURVE_FIELDS, self.to_rows())
        write_csv(out / "floor.csv", FLOOR_FIELDS, [{"toy": self.toy, **self.floor}])
        write_csv(out / "samples.csv", SAMPLE_FIELDS, sample_rows(self))
        return write_manifest(out, command=command or _python_command(), seeds=[self.config.seed],
                              wall_time_s=wall_time_s if wall_time_s is not None else self.final()["wall_s"],
                              extra=manifest_extra([self.config]))


CURVE_FIELDS = ["toy", "policy", "estimator", "cv", "proposal", "K", "temperature", "seed", "step", "sw", "mmd2", "tv",
                "outside", "loss", "ess", "c", "lr", "wall_s"]
FLOOR_FIELDS = ["toy", "sw", "mmd2", "tv"]
SAMPLE_FIELDS = ["toy", "policy", "estimator", "seed", "x", "y"]
EVALUATION = ("n_eval raw policy samples (no best-of-N) vs n_eval exact samples; SW2 with 256 fixed projections, "
              "MMD² with the exact samples' median bandwidth, TV on 30 bins per axis (2D grid; d > 2: mean 1-D "
              "marginal TV)")


def manifest_extra(configs: list[FitConfig]) -> dict:
    """The manifest's experiment facts: every fit's full config, and the estimators, toys and seeds it covers."""
    return {
        "experiment": "fixed_target",
        "configs": [asdict(c) for c in configs],
        "estimators": sorted({c.label for c in configs}),
        "toys": sorted({c.toy for c in configs}),
        "policies": sorted({c.policy for c in configs}),
        "seeds": sorted({c.seed for c in configs}),
        "evaluation": EVALUATION,
    }


def sample_rows(res: FitResult, n: int = 500) -> list[dict]:
    """The first ``n`` final samples as rows (first two coordinates), for figures."""
    c = res.config
    return [{"toy": c.toy, "policy": c.policy, "estimator": c.label, "seed": c.seed, "x": float(p[0]), "y": float(p[1])}
            for p in res.samples[:n].tolist()]


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csv(path: Path, names: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in names})


def _python_command() -> str:
    return "python " + " ".join(sys.argv)


class _Reference:
    """Exact samples and the distances to them, for a 2D grid target or a product target."""

    def __init__(self, config: FitConfig) -> None:
        landscape, target, dim = make_target(config.toy, config.temperature)
        self.landscape, self.target, self.dim = landscape, target, dim
        self.extent = float(landscape.extent)
        if dim == 2:
            self.exact = ExactGrid(target, extent=self.extent, n=config.grid_n)
        else:
            self.exact = ExactProduct(target, extent=self.extent, n=2001)
        g = torch.Generator().manual_seed(config.seed + _EVAL_SEED_OFFSET)
        self.ref = self.exact.sample(config.n_eval, g)
        self.bandwidth = median_bandwidth(self.ref)
        self.seed = config.seed
        self.floor = self.distances(self.exact.sample(config.n_eval, g))

    def marginal_tv(self, samples: torch.Tensor, bins: int = 30) -> float:
        """Mean over coordinates of (1/2) Σ_b |N_b/N - P_b| on ``bins`` equal bins of [-extent, extent]."""
        axis, log_p = self.exact.axis, self.exact.log_p  # (n,), (d, n) normalised
        edges = torch.linspace(-self.extent, self.extent, bins + 1, dtype=torch.float64)
        idx_axis = torch.bucketize(axis, edges[1:-1])
        total = 0.0
        for j in range(self.dim):
            exact = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx_axis, torch.exp(log_p[j]))
            x = samples[:, j]
            inside = (x >= -self.extent) & (x <= self.extent)
            counts = torch.bincount(torch.bucketize(x[inside], edges[1:-1]), minlength=bins).to(torch.float64)
            total += 0.5 * (float((counts / x.shape[0] - exact).abs().sum()) + 1.0 - float(inside.double().mean()))
        return total / self.dim

    def distances(self, samples: torch.Tensor) -> dict:
        proj = torch.Generator().manual_seed(self.seed + _EVAL_SEED_OFFSET + 1)  # same projections at every evaluation
        samples = samples.to(torch.float64)
        tv = grid_tv(samples, self.exact) if self.dim == 2 else self.marginal_tv(samples)
        return {"sw": sliced_wasserstein(samples, self.ref, generator=proj),
                "mmd2": mmd2(samples, self.ref, bandwidth=self.bandwidth), "tv": tv}


def exact_reference(toy: str, temperature: float, *, n_eval: int, seed: int, grid_n: int = 301):
    """The target, its exact answers, ``n_eval`` exact samples, the MMD bandwidth and the noise floor."""
    ref = _Reference(FitConfig(toy=toy, temperature=temperature, n_eval=n_eval, seed=seed, grid_n=grid_n))
    return ref.target, ref.exact, ref.ref, ref.bandwidth, ref.floor


def evaluate(model, reference: _Reference, *, temperature: float, n_eval: int, steps: int, seed: int,
             step: int) -> tuple[dict, torch.Tensor]:
    """Sample ``n_eval`` points from the policy and measure their distances to the exact samples."""
    g = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET + 2 + step)
    samples = model.sample(torch.zeros(1, 0), n_eval, temperature=temperature, steps=steps, generator=g)[0]
    if not bool(torch.isfinite(samples).all()):
        return {"sw": math.inf, "mmd2": math.inf, "tv": 1.0}, samples
    return reference.distances(samples), samples


def exact_sampler_distances(config: FitConfig | None = None, **overrides) -> dict:
    """What the sampler alone reaches: integrate the *exact* velocity with the fit's sampler, measure as a fit.

    The oracle's network regresses on the exact posterior mean mu1(u_t, t); with a perfect network its
    samples would be those of the ODE du/dt = v*(u, t), v* = convert(mu1, x1 -> velocity) on the policy's
    path (linear flow or VP), integrated by the same ``sample_steps`` Euler steps from t_min to
    1 - t_min. Their distances to the exact samples are the sampler's own cap: no fit can be expected
    below it, whatever the network. Uses ``config``'s toy, policy, temperature, t_min, sample_steps,
    n_eval, seed and oracle_grid_n (keyword ``overrides`` replace fields). Returns {"sw", "mmd2", "tv"}
    like a fit's evaluation, and the fit's floor under "floor".
    """
    c = FitConfig(**{**asdict(config or FitConfig()), **overrides}).validate()
    reference = _Reference(c)
    oracle = GridOracle(reference.target, reference.extent, c.oracle_grid_n, reference.dim)
    path = _build_model(c, reference.dim).path  # the path of the policy this config fits

    def velocity(u: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((u.shape[0],), t, dtype=u.dtype)
        return path.convert(oracle(u, tt, path), u, tt[:, None], src="x1", dst="velocity")

    g = torch.Generator().manual_seed(c.seed + _EVAL_SEED_OFFSET + 3)
    u0 = torch.randn(c.n_eval, reference.dim, generator=g, dtype=torch.float64)
    samples = euler(velocity, u0, time_grid(c.t_min, c.sample_steps))
    return {**reference.distances(samples), "floor": reference.floor}


def _build_model(config: FitConfig, dim: int) -> torch.nn.Module:
    """The policy, initialised from ``config.seed`` without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initialisation only; fork_rng restores the global state afterwards
        return POLICIES[config.policy](0, dim, hidden=config.hidden, n_blocks=config.n_blocks, squash=False,
                                       t_min=config.t_min, time_scale=config.time_scale)


def fit_to_target(config: FitConfig | None = None, *, out_dir: str | Path | None = None, progress: bool = True,
                  command: str | None = None, **overrides) -> FitResult:
    """Train a stateless policy (obs_dim 0, no squash) onto exp(Q_toy / temperature) on R^d.

    Each step: u1 = ``batch`` policy samples (no grad); with ``proposal="policy"`` the first ``M`` of them
    are every row's ``prior_samples``; then ``policy.loss(obs, u1, target, K, cv, prior_samples)`` and
    one Adam step (cosine or constant learning rate, gradient norm clipped). Every ``eval_every`` steps
    (and at step 0) the policy's samples are compared with exact samples by SW2, MMD² and TV.

    Args:
        config: a :class:`FitConfig` (default: ``FitConfig()``); keyword ``overrides`` replace fields
            (``fit_to_target(toy="ring", steps=50)``).
        out_dir: if given, write curves.csv, floor.csv, samples.csv and manifest.json (with the full
            config) there, so a fit started from Python has the same provenance as the benchmark's.
        progress: show a tqdm bar.
        command: the command recorded in the manifest (default: this process's argv).

    ``cv="exact"`` is the oracle: the exact posterior mean (:class:`GridOracle`) replaces the estimate,
    which shows what the network and sampler reach with a perfect estimator.

    Returns:
        :class:`FitResult` with the curves, the noise floor, the final samples and the model.
    """
    config = FitConfig(**{**asdict(config or FitConfig()), **overrides}).validate()
    c = config
    reference = _Reference(c)
    target = reference.target
    model = _build_model(c, reference.dim)
    exact_mu1 = None
    if c.cv == EXACT:
        oracle = GridOracle(target, reference.extent, c.oracle_grid_n, reference.dim)
        exact_mu1 = lambda u_t, t: oracle(u_t, t, model.path)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(c.steps, 1)) if c.lr_schedule == "cosine"
             else None)
    gen = torch.Generator().manual_seed(c.seed)
    obs = torch.zeros(c.batch, 0)
    result = FitResult(c, floor=reference.floor, model=model)
    use_prior = c.proposal == "policy" and c.cv != EXACT

    sums = {"loss": 0.0, "ess": 0.0, "c": 0.0}
    count, start = 0, time.perf_counter()

    def record(step: int) -> None:
        nonlocal count, sums
        dist, samples = evaluate(model, reference, temperature=c.temperature, n_eval=c.n_eval,
                                 steps=c.sample_steps, seed=c.seed, step=step)
        means = {"loss": sums["loss"] / count if count else None}
        means.update({k: sums[k] / count if count and c.cv != EXACT else None for k in ("ess", "c")})
        outside = float((samples.abs() > reference.extent).any(-1).double().mean())
        result.curves.append({"step": step, **dist, "outside": outside, **means, "lr": opt.param_groups[0]["lr"],
                              "wall_s": time.perf_counter() - start})
        result.samples = samples
        sums, count = {k: 0.0 for k in sums}, 0

    record(0)
    bar = tqdm(range(1, c.steps + 1), desc=f"{c.toy} {c.policy} {c.label}", disable=not progress, leave=False)
    for step in bar:
        u1 = model.sample(obs[:1], c.batch, temperature=c.temperature, steps=c.endpoint_steps, generator=gen)[0]
        prior = u1[None, : c.M].expand(c.batch, -1, -1) if use_prior else None
        if c.endpoints == "mixed":  # half policy samples (clamped to the box), half uniform on the box
            box = reference.extent
            uni = (2 * torch.rand(c.batch, reference.dim, generator=gen) - 1) * box
            u1 = torch.cat([u1[: c.batch // 2].clamp(-box, box), uni[c.batch // 2:]], 0)
        loss, info = model.loss(obs, u1, target, temperature=c.temperature, K=c.K,
                                cv="none" if c.cv == EXACT else c.cv, generator=gen, exact_mu1=exact_mu1,
                                prior_samples=prior, mixture=c.mixture, adaptive=c.adaptive_share)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)  # the authors clip the actor at 10
        opt.step()
        if sched is not None:
            sched.step()
        sums["loss"] += loss.item()
        if info["ess"] is not None:
            sums["ess"] += info["ess"]
            sums["c"] += info["c"]
        count += 1
        if step % c.eval_every == 0 or step == c.steps:
            record(step)
            bar.set_postfix(sw=f"{result.curves[-1]['sw']:.3f}", tv=f"{result.curves[-1]['tv']:.3f}")
    bar.close()
    if out_dir is not None:
        result.save(out_dir, command=command)
    return result


def config_fields() -> list:
    """The dataclass fields of :class:`FitConfig` (name, type, default, help), for generated command lines."""
    return [f for f in fields(FitConfig)]
