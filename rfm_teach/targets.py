"""The Boltzmann target p1(x) ∝ exp(Q(x) / temperature), 2D toy Q-landscapes, and exact answers on a grid.

The Boltzmann policy pi(a|s) ∝ exp(Q(s, a) / temperature) is what an RFM actor is trained to sample.
With ``squash=True`` the target lives in the latent space u (a = tanh u) and picks up the Jacobian of
tanh, so that pushing it through tanh gives back exactly exp(Q(a) / temperature) on the box (-1, 1)^d::

    log p1(u) = Q(tanh u) / temperature + sum_j log sech^2(u_j)            (+ const)
    grad log p1(u) = grad_a Q(tanh u) ⊙ sech^2(u) / temperature - 2 tanh(u)

Forgetting the log sech^2 term is a silent bug: the sampler then targets the wrong density.

The name ``temperature`` (the paper's lambda, SAC's alpha) is used throughout so that it never clashes
with the path coefficient ``alpha_t`` of :mod:`rfm_teach.paths`.

Derived in notebooks/01_boltzmann_policy.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .paths import GaussianPath, as_time

__all__ = [
    "Boltzmann",
    "log_sech2",
    "RingOfModes",
    "TwoMoons",
    "AnisotropicQuadratic",
    "make_toy",
    "TOYS",
    "Bimodal1D",
    "ProductLandscape",
    "ExactGrid",
    "ExactGaussian",
    "ExactProduct",
    "exact_answers",
]

QFunction = Callable[[Tensor], Tensor]


def log_sech2(u: Tensor) -> Tensor:
    """log sech^2(u) = 2 (log 2 - logaddexp(u, -u)), stable for any |u| (no overflow of cosh)."""
    return 2.0 * (math.log(2.0) - torch.logaddexp(u, -u))


class Boltzmann:
    """Unnormalised Boltzmann density p1(x) ∝ exp(Q(x) / temperature), optionally in tanh-latent space.

    Args:
        q: any differentiable callable mapping actions of shape (..., d) to values of shape (...).
            For a state-conditioned critic close over the states, e.g.
            ``lambda a: critic(s[:, None].expand(-1, a.shape[1], -1), a)`` for draws (B, K, d).
        temperature: lambda > 0. Small values make the target sharper (and importance sampling harder).
        squash: if True the density is over the latent u with a = tanh(u), Jacobian included.
        check: if True (the default) every call checks that Q has the right shape and is finite. The
            finiteness test reads the values back to the host (a device sync on a GPU); the agent's
            update, which trusts its own critic, passes False.

    Shapes: ``x``: (..., d) -> ``log_density``: (...), ``score``: (..., d).
    """

    def __init__(self, q: QFunction, temperature: float, squash: bool = False, *, check: bool = True) -> None:
        if not callable(q):
            raise TypeError(f"q must be callable (a tensor (..., d) -> (...)); got {type(q).__name__}")
        temperature = float(temperature)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        self.q, self.temperature, self.squash, self.check = q, temperature, bool(squash), bool(check)

    def __repr__(self) -> str:
        return f"Boltzmann(q={self.q!r}, temperature={self.temperature}, squash={self.squash})"

    def action(self, x: Tensor) -> Tensor:
        """The action the critic sees: tanh(x) when squashed, x otherwise."""
        return torch.tanh(x) if self.squash else x

    def _q(self, x: Tensor) -> Tensor:
        q = self.q(self.action(x))
        if not self.check:
            return q
        if not isinstance(q, Tensor) or q.shape != x.shape[:-1]:
            got = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
            raise ValueError(f"q must map actions of shape {tuple(x.shape)} to shape {tuple(x.shape[:-1])}; got {got}")
        if not bool(torch.isfinite(q).all()):
            bad = q[~torch.isfinite(q)][0].item()
            raise ValueError(f"q returned a non-finite value ({bad!r}); Q must be finite at every action")
        return q

    def log_density(self, x: Tensor) -> Tensor:
        """Unnormalised log p1(x) = Q(a(x)) / temperature [+ sum_j log sech^2(x_j)]. Shape (...)."""
        logp = self._q(x) / self.temperature
        if self.squash:
            logp = logp + log_sech2(x).sum(-1)
        return logp

    def log_density_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (log p1(x), grad_x log p1(x)) in one autodiff pass; both detached.

        The gradient is taken with respect to ``x`` only: parameters inside ``q`` (a critic) receive
        no gradient, which is what the actor's regression target needs (it is a constant).
        """
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.log_density(xg)
            (score,) = torch.autograd.grad(logp.sum(), xg)
        return logp.detach(), score.detach()


# ----------------------------------------------------------------------------------------------------
# 2D toy Q-landscapes ("bandits"): Q(a) for a in R^2, meant for actions in (-1, 1)^2.
# Each is a plain callable (picklable, with a readable repr) plus the grid extent that holds its mass.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingOfModes:
    """Multi-goal bandit: ``n_modes`` goals on a circle; Q is a soft maximum of Gaussian bumps.

    Q(a) = scale * log sum_k exp(-|a - g_k|^2 / (2 width^2)), g_k = radius (cos 2πk/n, sin 2πk/n).
    Far from the goals Q falls quadratically, so exp(Q / temperature) is normalisable on R^2.
    """

    n_modes: int = 6
    radius: float = 0.6
    width: float = 0.1
    scale: float = 1.0
    extent: float = 1.5

    def goals(self, dtype: torch.dtype = torch.float64) -> Tensor:
        angles = torch.arange(self.n_modes, dtype=dtype) * (2 * math.pi / self.n_modes)
        return self.radius * torch.stack([torch.cos(angles), torch.sin(angles)], -1)

    def __call__(self, a: Tensor) -> Tensor:
        goals = self.goals(a.dtype).to(a.device)
        d2 = ((a[..., None, :] - goals) ** 2).sum(-1)
        return self.scale * torch.logsumexp(-d2 / (2 * self.width**2), -1)


@dataclass(frozen=True)
class TwoMoons:
    """Two interleaved half-circles ("two moons"); Q = -scale * soft-min of squared distances to the arcs.

    The arcs are those of the classic two-moons data set, shrunk by ``size`` and centred in the unit box.
    """

    size: float = 0.5
    width: float = 0.08
    scale: float = 1.0
    extent: float = 1.5

    def _arc_distance2(self, p: Tensor, centre: tuple[float, float], upper: bool) -> Tensor:
        rel = p - torch.tensor(centre, dtype=p.dtype, device=p.device)
        r = rel.norm(dim=-1)
        on_arc = rel[..., 1] >= 0 if upper else rel[..., 1] <= 0
        d_arc = (r - self.size) ** 2
        ends = torch.tensor([[self.size, 0.0], [-self.size, 0.0]], dtype=p.dtype, device=p.device)
        d_end = ((rel[..., None, :] - ends) ** 2).sum(-1).min(-1).values
        return torch.where(on_arc, d_arc, d_end)

    def __call__(self, a: Tensor) -> Tensor:
        s = self.size
        d_up = self._arc_distance2(a, (-0.5 * s, 0.25 * s), upper=True)
        d_low = self._arc_distance2(a, (0.5 * s, -0.25 * s), upper=False)
        d2 = torch.stack([d_up, d_low], -1)
        return self.scale * torch.logsumexp(-d2 / (2 * self.width**2), -1)


@dataclass(frozen=True)
class AnisotropicQuadratic:
    """Q(a) = -1/2 sum_j (a_j - m_j)^2 / s_j^2: the Boltzmann target is Gaussian, N(m, temperature * diag(s^2)).

    Without squashing, every posterior E[x1 | x_t] is Gaussian in closed form (:meth:`posterior`),
    the sharpest unit test of the estimators.
    """

    mean: tuple[float, ...] = (0.3, -0.2)
    scales: tuple[float, ...] = (0.25, 0.6)
    extent: float = 3.0

    def __call__(self, a: Tensor) -> Tensor:
        m = torch.tensor(self.mean, dtype=a.dtype, device=a.device)
        s = torch.tensor(self.scales, dtype=a.dtype, device=a.device)
        return -0.5 * (((a - m) / s) ** 2).sum(-1)

    def posterior(self, x_t: Tensor, t: float | Tensor, path: GaussianPath, temperature: float) -> tuple[Tensor, Tensor]:
        """Closed-form posterior of x1 given x_t for the *unsquashed* target: (mean (B, d), variance (B, d)).

        Prior N(m, S) with S = temperature diag(s^2); likelihood N(x_t; alpha x1, beta^2 I). Then
        precision P = S^-1 + alpha^2 / beta^2 and mean = P^-1 (S^-1 m + alpha x_t / beta^2).
        """
        tt = as_time(t, x_t)
        a, b = path.alpha(tt), path.beta(tt)
        m = torch.tensor(self.mean, dtype=x_t.dtype, device=x_t.device)
        s_inv = 1.0 / (temperature * torch.tensor(self.scales, dtype=x_t.dtype, device=x_t.device) ** 2)
        precision = s_inv + a**2 / b**2
        mean = (s_inv * m + a * x_t / b**2) / precision
        return mean, (1.0 / precision).expand_as(mean)


@dataclass(frozen=True)
class Bimodal1D:
    """A 1-D landscape with two bumps: q(a) = scale * log sum_i exp(-(a - c_i)^2 / (2 width^2)). (...) -> (...)."""

    centres: tuple[float, ...] = (-0.45, 0.5)
    width: float = 0.15
    scale: float = 1.0

    def __call__(self, a: Tensor) -> Tensor:
        c = torch.tensor(self.centres, dtype=a.dtype, device=a.device)
        return self.scale * torch.logsumexp(-((a[..., None] - c) ** 2) / (2 * self.width**2), -1)


@dataclass(frozen=True)
class ProductLandscape:
    """Q(a) = sum_j q_j(a_j): a d-dimensional landscape whose Boltzmann target is a product of 1-D ones.

    exp(Q / temperature) = prod_j exp(q_j(a_j) / temperature) (and the tanh Jacobian is a product too), and
    the reverse kernel N(x_t / alpha_t, (beta_t / alpha_t)^2 I) is isotropic, so the posterior of x1 given
    x_t factorises over dimensions: 1-D quadrature gives exact answers in d = 6 or 12
    (:class:`ExactProduct`). ``ProductLandscape.bimodal(6)`` is the d = 6 test target of the benchmarks.
    """

    factors: tuple[Callable[[Tensor], Tensor], ...]
    extent: float = 1.5

    @classmethod
    def bimodal(cls, dim: int) -> ProductLandscape:
        """d alternating two-bump factors (mass in (-1, 1) per coordinate), a fixed, seed-free choice."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1; got {dim!r}")
        kinds = (Bimodal1D((-0.45, 0.5), 0.15), Bimodal1D((-0.6, 0.1, 0.55), 0.12))
        return cls(tuple(kinds[j % 2] for j in range(dim)))

    @property
    def dim(self) -> int:
        return len(self.factors)

    def __call__(self, a: Tensor) -> Tensor:
        if a.shape[-1] != self.dim:
            raise ValueError(f"this landscape has d = {self.dim}; got actions of shape {tuple(a.shape)}")
        return sum(f(a[..., j]) for j, f in enumerate(self.factors))


TOYS: dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
    "ring": RingOfModes,
    "two_moons": TwoMoons,
    "quadratic": AnisotropicQuadratic,
}


def make_toy(name: str):
    """Build a 2D toy Q-landscape by name: one of ``"ring"``, ``"two_moons"``, ``"quadratic"``."""
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; expected one of {sorted(TOYS)}")
    return TOYS[name]()


# ----------------------------------------------------------------------------------------------------
# Exact answers by quadrature on a grid (d = 1 or 2).
# ----------------------------------------------------------------------------------------------------


class ExactGrid:
    """Exact answers for a low-dimensional target by quadrature on a regular grid, in float64.

    The grid covers [-extent, extent]^d with ``n`` points per axis. Quadrature with a smooth integrand
    converges very fast on a regular grid, so 401^2 points on [-3, 3]^2 give posterior means to many
    digits for t up to about 0.95 (the posterior's width (1 - t)/t must span a few grid cells).

    Attributes:
        points: (G, d) grid points. log_p: (G,) unnormalised log density. cell: volume of one cell.
    """

    def __init__(self, target: Boltzmann, extent: float = 3.0, n: int = 401, dim: int = 2) -> None:
        if dim not in (1, 2):
            raise ValueError(f"quadrature on a grid is for d = 1 or 2; got dim={dim}")
        if n < 3:
            raise ValueError(f"n must be >= 3 grid points per axis; got {n}")
        self.target, self.extent, self.n, self.dim = target, float(extent), int(n), dim
        self.axis = torch.linspace(-extent, extent, n, dtype=torch.float64)
        if dim == 1:
            self.points = self.axis[:, None]
        else:
            gx, gy = torch.meshgrid(self.axis, self.axis, indexing="xy")
            self.points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
        self.cell = float(self.axis[1] - self.axis[0]) ** dim
        with torch.no_grad():
            self.log_p = target.log_density(self.points)
        self.log_normaliser = float(torch.logsumexp(self.log_p, 0)) + math.log(self.cell)

    def density(self) -> Tensor:
        """Normalised density on the grid, shape (n,) for d = 1 or (n, n) with rows along the second axis."""
        p = torch.exp(self.log_p - self.log_normaliser)
        return p if self.dim == 1 else p.reshape(self.n, self.n)

    def mean(self) -> Tensor:
        """E[x1] under the target, shape (d,)."""
        w = torch.softmax(self.log_p, 0)
        return w @ self.points

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples (up to the grid resolution): pick cells by mass, jitter uniformly inside. (num, d)."""
        w = torch.softmax(self.log_p, 0)
        idx = torch.multinomial(w, num, replacement=True, generator=generator)
        h = float(self.axis[1] - self.axis[0])
        jitter = (torch.rand(num, self.dim, dtype=torch.float64, generator=generator) - 0.5) * h
        return self.points[idx] + jitter

    def _log_joint(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """log p1(x1) + log N(x_t; alpha_t x1, beta_t^2 I) at every grid point x1 (normalised p1). (B, G)."""
        x_t = x_t.to(torch.float64)
        tt = as_time(t, x_t)
        a, b = path.alpha(tt), path.beta(tt)
        log_joint = torch.empty(x_t.shape[0], self.points.shape[0], dtype=torch.float64)
        for start in range(0, x_t.shape[0], 16):  # chunks of rows keep the temporaries at 16 x G
            rows = slice(start, start + 16)
            diff2 = ((x_t[rows, None, :] - a[rows, None] * self.points) ** 2).sum(-1)
            log_kernel = -diff2 / (2 * b[rows] ** 2) - self.dim * torch.log(b[rows] * math.sqrt(2 * math.pi))
            log_joint[rows] = self.log_p - self.log_normaliser + log_kernel
        return log_joint

    def log_marginal(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """Exact log p_t(x_t) = log ∫ p1(x1) N(x_t; alpha_t x1, beta_t^2 I) dx1 by quadrature. Shape (B,).

        Its gradient in x_t is the noised score that diffusion policies learn (Tweedie: -mu0 / beta_t).
        """
        return torch.logsumexp(self._log_joint(x_t, t, path), -1) + math.log(self.cell)

    def posterior_log_weights(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """log q1(x1 = grid point | x_t), normalised over the grid. Shape (B, G).

        q1(x1 | x_t) ∝ p1(x1) N(x_t; alpha_t x1, beta_t^2 I).
        """
        log_joint = self._log_joint(x_t, t, path)
        return log_joint - torch.logsumexp(log_joint, -1, keepdim=True)

    def posterior_expectation(self, fn: Callable[[Tensor], Tensor], x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """E[fn(x1) | x_t] by quadrature. ``fn`` maps grid points (G, d) to (G, m) or to (B, G, m)."""
        w = torch.exp(self.posterior_log_weights(x_t, t, path))
        values = fn(self.points)
        if values.dim() == 2:
            return w @ values
        return torch.einsum("bg,bgm->bm", w, values)

    def posterior_mean(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """Exact mu1 = E[x1 | x_t] by quadrature, shape (B, d), float64."""
        return self.posterior_expectation(lambda x: x, x_t, t, path)

    def posterior_variance(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """Exact Var(x1_j | x_t) per dimension by quadrature, shape (B, d), float64.

        Its sum over j, tr Cov(x1 | x_t), is the mean squared error of ONE exact posterior draw used as
        the estimate of mu1: the reference every Monte Carlo estimator should beat.
        """
        moments = self.posterior_expectation(lambda x: torch.cat([x, x**2], -1), x_t, t, path)
        mean, second = moments.chunk(2, -1)
        return (second - mean**2).clamp_min(0.0)

    def marginal_sample(self, num: int, t: float, path: GaussianPath, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t = alpha_t x1 + beta_t x0 with x1 from the target and x0 ~ N(0, I). Shape (num, d)."""
        return _marginal_sample(self, num, t, path, generator)


class ExactGaussian:
    """Closed-form answers for the unsquashed :class:`AnisotropicQuadratic` target in any dimension.

    p1 = N(m, S) with S = temperature diag(s^2); the posterior of x1 given x_t is Gaussian with
    precision S^-1 + alpha_t^2 / beta_t^2 (:meth:`AnisotropicQuadratic.posterior`). Same interface as
    :class:`ExactGrid` (``mean``, ``sample``, ``posterior_mean``, ``posterior_variance``, ``marginal_sample``).
    """

    def __init__(self, target: Boltzmann) -> None:
        if not isinstance(target.q, AnisotropicQuadratic) or target.squash:
            raise ValueError("ExactGaussian needs an unsquashed Boltzmann target of an AnisotropicQuadratic")
        self.target, self.toy, self.dim = target, target.q, len(target.q.mean)
        self._m = torch.tensor(self.toy.mean, dtype=torch.float64)
        self._std = math.sqrt(target.temperature) * torch.tensor(self.toy.scales, dtype=torch.float64)

    def mean(self) -> Tensor:
        return self._m.clone()

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        return self._m + self._std * torch.randn(num, self.dim, dtype=torch.float64, generator=generator)

    def posterior_mean(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        return self.toy.posterior(x_t.to(torch.float64), t, path, self.target.temperature)[0]

    def posterior_variance(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        return self.toy.posterior(x_t.to(torch.float64), t, path, self.target.temperature)[1]

    def marginal_sample(self, num: int, t: float, path: GaussianPath, generator: torch.Generator | None = None) -> Tensor:
        return _marginal_sample(self, num, t, path, generator)


class ExactProduct:
    """Exact answers for a target whose landscape is a :class:`ProductLandscape`, in any dimension.

    p1(x) = prod_j p_j(x_j) and the reverse kernel is isotropic, so q1(x1 | x_t) = prod_j q_j(x1_j | x_t_j)
    and every posterior moment is a 1-D quadrature per coordinate on ``n`` points of [-extent, extent]
    (tanh Jacobian included when the target is squashed). Same interface as :class:`ExactGrid`.
    """

    def __init__(self, target: Boltzmann, extent: float | None = None, n: int = 2001) -> None:
        if not isinstance(target.q, ProductLandscape):
            raise ValueError(f"ExactProduct needs a Boltzmann target of a ProductLandscape; got q={target.q!r}")
        if n < 3:
            raise ValueError(f"n must be >= 3 grid points per axis; got {n}")
        extent = (4.0 if target.squash else target.q.extent) if extent is None else float(extent)
        self.target, self.dim = target, target.q.dim
        self.axis = torch.linspace(-extent, extent, n, dtype=torch.float64)  # (n,)
        action = torch.tanh(self.axis) if target.squash else self.axis
        with torch.no_grad():
            log_p = torch.stack([f(action) / target.temperature for f in target.q.factors])  # (d, n)
            if target.squash:
                log_p = log_p + log_sech2(self.axis)
        self.log_p = log_p - torch.logsumexp(log_p, -1, keepdim=True)  # normalised over the grid, per axis

    def mean(self) -> Tensor:
        return torch.exp(self.log_p) @ self.axis

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples up to the grid resolution, each coordinate from its own 1-D factor. (num, d)."""
        idx = torch.multinomial(torch.exp(self.log_p), num, replacement=True, generator=generator)  # (d, num)
        h = float(self.axis[1] - self.axis[0])
        jitter = (torch.rand(num, self.dim, dtype=torch.float64, generator=generator) - 0.5) * h
        return self.axis[idx].T + jitter

    def _posterior_weights(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        """q_j(x1_j = axis point | x_t_j), normalised per row and coordinate. (B, d, n)."""
        x_t = x_t.to(torch.float64)
        tt = as_time(t, x_t)
        a, b = path.alpha(tt)[:, :, None], path.beta(tt)[:, :, None]  # (B, 1, 1)
        log_w = self.log_p - (x_t[:, :, None] - a * self.axis) ** 2 / (2 * b**2)
        return torch.softmax(log_w, -1)

    def posterior_mean(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        return self._posterior_weights(x_t, t, path) @ self.axis

    def posterior_variance(self, x_t: Tensor, t: float | Tensor, path: GaussianPath) -> Tensor:
        w = self._posterior_weights(x_t, t, path)
        mean = w @ self.axis
        return (w @ self.axis**2 - mean**2).clamp_min(0.0)

    def marginal_sample(self, num: int, t: float, path: GaussianPath, generator: torch.Generator | None = None) -> Tensor:
        return _marginal_sample(self, num, t, path, generator)


def _marginal_sample(exact, num: int, t: float, path: GaussianPath, generator: torch.Generator | None) -> Tensor:
    x1 = exact.sample(num, generator)
    x0 = torch.randn(num, exact.dim, dtype=torch.float64, generator=generator)
    return path.interpolate(x1, x0, torch.full((num, 1), float(t), dtype=torch.float64))


def exact_answers(target: Boltzmann, **grid_options) -> ExactGrid | ExactGaussian | ExactProduct:
    """The exact-answer object for ``target``: closed form (Gaussian), 1-D quadrature (product), or a 2D grid.

    ``grid_options`` (``extent``, ``n``) go to the quadrature. Every returned object has ``mean()``,
    ``sample(num, generator)``, ``posterior_mean(x_t, t, path)``, ``posterior_variance(x_t, t, path)``
    and ``marginal_sample(num, t, path, generator)``.
    """
    if isinstance(target.q, AnisotropicQuadratic) and not target.squash:
        return ExactGaussian(target)
    if isinstance(target.q, ProductLandscape):
        return ExactProduct(target, **grid_options)
    extent = grid_options.pop("extent", getattr(target.q, "extent", 3.0) * (2.0 if target.squash else 1.0))
    return ExactGrid(target, extent=extent, **grid_options)
