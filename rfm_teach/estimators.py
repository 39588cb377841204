"""Posterior-mean estimators of Reverse Flow Matching: E[x1 | x_t] from K importance draws.

Fix a noisy point x_t at time t. Draw noise x0^k ~ N(0, I) and solve the path for the clean endpoint,
x1^k = (x_t - beta_t x0^k) / alpha_t. Those endpoints come from the *reverse Gaussian kernel*
N(x_t / alpha_t, (beta_t / alpha_t)^2 I), so their importance weight against the data posterior
q1(x1 | x_t) ∝ p1(x1) N(x_t; alpha_t x1, beta_t^2 I) is just the target density p1(x1^k)::

    log w_k = log p1(x1^k)              (Q / temperature, + log sech^2 when squashed)
    w_k     = softmax_k(log w_k)        (self-normalised; log-sum-exp keeps it finite)
    ESS     = 1 / sum_k w_k^2

That kernel is wide at small t (std (1 - t) / t for the linear flow), so one draw soon carries all the
weight. Passing ``prior_samples`` (the policy's own particles, approximate draws from p1) replaces it by
a defensive mixture of the kernel and two densities fitted to those particles, one joint and one of their
marginals, whose kernel share rises per row to the kernel's predicted efficiency (:func:`draw`,
:class:`ParticleProposal`, :func:`kernel_efficiency`): an addition of this package beyond the paper, derived in
notebook 03 (section 11) and measured in notebooks 03 and 05.

Every estimator below is ``sum_k w_k (x1^k + c ⊙ s1^k)`` for a per-dimension coefficient c, where
``s1^k = grad log p1(x1^k) + (alpha_t / beta_t) x0^k`` is the score of the data posterior. Stein's
identity gives E_q1[s1] = 0, so every c has the same expectation (the Langevin–Stein control variate):

==============  ===============================  ===============================================
``cv``          c                                family
==============  ===============================  ===============================================
``"none"``      0                                noise-expectation (QNE, SDAC): SNIS over noise
``"gradient"``  (beta_t / alpha_t)^2             gradient-expectation (Tweedie, iDEM, DQS)
float           that value                       a fixed dial between the two
``"plugin"``    -Σw²(x-μ)(s-s̄) / (Σw²(s-s̄)²+ρ)   the paper's per-dimension minimum-variance c,
                clipped to ±clip                 estimated from the same draws
``"auto"``      see :func:`auto_coefficient`     our robust choice (the default)
==============  ===============================  ===============================================

:func:`qsm_mean` gives the QSM target beside them (the target's score at the noisy point, no averaging).

Derived in notebooks/03_noise_expectation.ipynb, 04_gradient_expectation.ipynb and
05_stein_control_variates.ipynb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import seeds
from .paths import GaussianPath, LinearFlow, TargetKind, as_time
from .seeds import Generator
from .targets import Boltzmann

__all__ = [
    "ImportanceDraws",
    "PosteriorEstimate",
    "CV_MODES",
    "AUTO_GATES",
    "draw",
    "noise_expectation",
    "gradient_expectation",
    "stein_control_variate",
    "plugin_coefficient",
    "coefficient_upper_end",
    "auto_coefficient",
    "combine",
    "ParticleProposal",
    "MIXTURE",
    "mixture_counts",
    "kernel_efficiency",
    "check_mixture",
    "posterior_mean",
    "qsm_mean",
]

CV = str | float
CV_MODES: tuple[str, ...] = ("none", "gradient", "plugin", "auto")
#: The tests of :func:`auto_coefficient` that can keep the plug-in c (all on by default).
AUTO_GATES: frozenset[str] = frozenset({"uniform", "weighted", "few", "split"})
#: Shares of the K draws when ``prior_samples`` are given (:func:`draw`): the reverse kernel (the defensive
#: part: it bounds every weight by p1 / share), the joint fit of the particles, the fit of their marginals.
MIXTURE: tuple[float, float, float] = (0.25, 0.25, 0.5)


@dataclass
class ImportanceDraws:
    """K draws from the reverse Gaussian kernel for each of B noisy points, with weights and scores.

    Shapes: ``x0``, ``x1``, ``score``: (B, K, d); ``log_w``, ``w``: (B, K); ``t``, ``alpha``, ``beta``: (B, 1).
    ``grad_log_p`` (= g(x1), the target's score) and ``score`` (= s1) are None when not needed (cv="none").
    """

    x_t: Tensor
    t: Tensor
    x0: Tensor
    x1: Tensor
    log_w: Tensor
    w: Tensor
    alpha: Tensor
    beta: Tensor
    grad_log_p: Tensor | None = None
    score: Tensor | None = None

    @property
    def ess(self) -> Tensor:
        """Effective sample size 1 / Σ_k w_k^2, shape (B,). 1 means one draw carries all the weight."""
        return 1.0 / (self.w**2).sum(-1)

    def subset(self, idx: Tensor) -> ImportanceDraws:
        """The draws at positions ``idx`` along K, re-weighted among themselves (an independent SNIS)."""
        log_w = self.log_w[:, idx]

        def pick(z: Tensor | None) -> Tensor | None:
            return None if z is None else z[:, idx]

        return ImportanceDraws(self.x_t, self.t, self.x0[:, idx], self.x1[:, idx], log_w, torch.softmax(log_w, -1),
                               self.alpha, self.beta, pick(self.grad_log_p), pick(self.score))


@dataclass
class PosteriorEstimate:
    """Result of :func:`posterior_mean`.

    Attributes:
        mean: estimate of mu1 = E[x1 | x_t], shape (B, d), detached.
        ess: effective sample size of the importance weights, shape (B,).
        c: control-variate coefficient used per row and dimension, shape (B, d).
        draws: the underlying :class:`ImportanceDraws`, for inspection and plotting.
    """

    mean: Tensor
    ess: Tensor
    c: Tensor
    draws: ImportanceDraws

    def to_target(self, kind: TargetKind, path: GaussianPath) -> Tensor:
        """The regression target of another parameterisation ("x0", "score", "velocity"), shape (B, d)."""
        return path.convert(self.mean, self.draws.x_t, self.draws.t, src="x1", dst=kind)


def _check_k(K: int) -> int:
    if isinstance(K, bool) or not isinstance(K, int):
        raise TypeError(f"K must be an int >= 1; got {K!r}")
    if K < 1:
        raise ValueError(f"K (the number of importance draws) must be >= 1; got {K}")
    return K


@dataclass
class ParticleProposal:
    """A density fitted to M particles of the policy, multiplied by the reverse kernel, per row.

    The reverse kernel k(x) = N(x; x_t / alpha_t, sigma^2 I), sigma = beta_t / alpha_t, is isotropic, so its
    product with a Gaussian kernel-density fit of the particles y_m (bandwidth h per row and dimension,
    Silverman's rule for the dimension of the fitted density) is again a Gaussian mixture with closed-form
    parts, which can be sampled and evaluated exactly. Two fits, the same formulas per coordinate::

        s^2 = h^2 sigma^2 / (h^2 + sigma^2),   c_m = (sigma^2 y_m + h^2 x_t / alpha_t) / (h^2 + sigma^2)

    - **joint** (``factorised=False``): f(x) = (1/M) Σ_m N(x; y_m, diag(h^2)), and
      f k / Z = Σ_m pi_m N(x; c_m, diag(s^2)) with pi_m ∝ N(y_m; x_t / alpha_t, diag(h^2 + sigma^2)).
      It keeps the particles' correlations but has only M components: in d dimensions it cannot place
      mass on a combination of coordinates that no single particle shows.
    - **marginal** (``factorised=True``): f(x) = Π_j (1/M) Σ_m N(x_j; y_mj, h_j^2), the product of the
      particles' 1-D marginal fits, and f k / Z = Π_j Σ_m pi_mj N(x_j; c_mj, s_j^2) with
      pi_mj ∝ N(y_mj; x_j,t / alpha_t, h_j^2 + sigma^2). Its M^d components cover every combination of
      the particles' coordinates, which is what a product-like target in d = 6 needs, and it ignores
      correlations (the joint fit and the kernel cover those in the mixture of :func:`draw`).

    Shapes: ``centres`` (B, M, d), ``log_pi`` (B, M) joint or (B, M, d) marginal, ``std`` and
    ``bandwidth`` (B, 1, d).
    """

    centres: Tensor
    log_pi: Tensor
    std: Tensor
    bandwidth: Tensor
    factorised: bool = False

    #: Floor of the bandwidth (latent units): particles that all coincide still give a proper density.
    MIN_BANDWIDTH = 1e-3

    @classmethod
    def fit(cls, particles: Tensor, kernel_mean: Tensor, sigma: Tensor, *, factorised: bool = False) -> ParticleProposal:
        """Shapes: ``particles`` (B, M, d), ``kernel_mean`` x_t / alpha_t (B, d), ``sigma`` (B, 1)."""
        h2 = cls.bandwidth2(particles, factorised)
        s2 = sigma[:, None] ** 2  # (B, 1, 1)
        centres = (s2 * particles + h2 * kernel_mean[:, None]) / (h2 + s2)
        log_pi = _log_normal_parts(particles, kernel_mean[:, None], h2 + s2)  # (B, M, d)
        if not factorised:
            log_pi = log_pi.sum(-1)
        return cls(centres, log_pi - torch.logsumexp(log_pi, 1, keepdim=True), (h2 * s2 / (h2 + s2)).sqrt(), h2.sqrt(),
                   factorised)

    @classmethod
    def bandwidth2(cls, particles: Tensor, factorised: bool) -> Tensor:
        """Squared bandwidth h^2 (B, 1, d): Silverman's rule for a d-dim (joint) or 1-D (marginal) fit."""
        M, d = particles.shape[1], particles.shape[2]
        n = 1 if factorised else d  # the dimension of the density that Silverman's rule fits
        silverman = (4.0 / ((n + 2) * M)) ** (1.0 / (n + 4))
        return (silverman * particles.std(1, unbiased=False, keepdim=True)).clamp_min(cls.MIN_BANDWIDTH) ** 2

    def sample(self, n: int, generator: Generator) -> Tensor:
        """n draws per row, (B, n, d): pick a component by pi (per coordinate if factorised), add noise of std s."""
        B, M, d = self.centres.shape
        if self.factorised:  # one component per row and coordinate: rows of probs are (b, j), b-major
            probs = self.log_pi.exp().transpose(1, 2).reshape(B * d, M)
            idx = seeds.multinomial(probs, n, generator, replacement=True).reshape(B, d, n).transpose(1, 2)
        else:
            idx = seeds.multinomial(self.log_pi.exp(), n, generator, replacement=True)[..., None].expand(-1, -1, d)
        centre = torch.gather(self.centres, 1, idx)  # (B, n, d)
        noise = seeds.randn(centre.shape, generator, dtype=centre.dtype, device=centre.device)
        return centre + self.std * noise

    def log_density(self, x: Tensor) -> Tensor:
        """log of the normalised mixture at x (B, K, d) -> (B, K)."""
        log_comp = _log_normal_parts(x[:, :, None], self.centres[:, None], self.std[:, None] ** 2)  # (B, K, M, d)
        if self.factorised:
            return torch.logsumexp(self.log_pi[:, None] + log_comp, 2).sum(-1)
        return torch.logsumexp(self.log_pi[:, None] + log_comp.sum(-1), -1)


def _log_normal_parts(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x_j; mean_j, var_j) per coordinate, not summed (all arguments broadcast)."""
    return -0.5 * (((x - mean) ** 2 / var) + torch.log(2 * math.pi * var))


def _log_normal(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, diag(var)) summed over the last axis (all arguments broadcast)."""
    return _log_normal_parts(x, mean, var).sum(-1)


def kernel_efficiency(particles: Tensor, kernel_mean: Tensor, sigma: Tensor) -> Tensor:
    """Predicted efficiency rho = ESS / K of the kernel-only proposal, per row, with the particles' fits as p1.

    For a prior f and the reverse kernel k = N(kernel_mean, sigma^2 I), the kernel-only weights are f(x1^k)
    and Kong's rule of thumb gives ESS / K ≈ rho = E_k[f]^2 / E_k[f^2] in (0, 1] (1 when f is flat over
    the kernel). With f a Gaussian kernel-density fit of the particles y_m (bandwidth h, as in
    :class:`ParticleProposal`) both moments are closed-form sums over the particles::

        E_k[f]   = (1/M)   Σ_m  N(kernel_mean; y_m, h^2 + sigma^2)
        E_k[f^2] = (1/M^2) Σ_mn N(y_m; y_n, 2 h^2) N(kernel_mean; (y_m + y_n) / 2, h^2 / 2 + sigma^2)

    (per coordinate, diagonal). Returned: the smaller of rho for the joint fit and for the product of the
    marginal fits, so the kernel is trusted only when both fits say its weights stay even.
    Shapes: ``particles`` (B, M, d), ``kernel_mean`` (B, d), ``sigma`` (B, 1). Returns (B,).
    """
    s2 = sigma[:, None] ** 2  # (B, 1, 1)
    mean = kernel_mean[:, None]  # (B, 1, d)
    middle = 0.5 * (particles[:, :, None] + particles[:, None])  # (B, M, M, d)
    rho = []
    for factorised in (False, True):
        h2 = ParticleProposal.bandwidth2(particles, factorised)  # (B, 1, d)
        first = _log_normal_parts(mean, particles, h2 + s2)  # (B, M, d)
        second = (_log_normal_parts(particles[:, :, None], particles[:, None], 2 * h2[:, None])
                  + _log_normal_parts(mean[:, None], middle, h2[:, None] / 2 + s2[:, None]))  # (B, M, M, d)
        if factorised:  # a product over coordinates: rho is the product of the 1-D rhos
            log_rho = 2 * torch.logsumexp(first, 1) - torch.logsumexp(second.flatten(1, 2), 1)  # (B, d)
            rho.append(log_rho.sum(-1).exp())
        else:
            rho.append((2 * torch.logsumexp(first.sum(-1), 1) - torch.logsumexp(second.sum(-1).flatten(1), 1)).exp())
    return torch.minimum(*rho).clamp(max=1.0)


def mixture_counts(K: int, shares: tuple[float, float, float] = MIXTURE) -> tuple[int, int, int]:
    """Draws per component (kernel, joint fit, marginal fit) for K draws: K_k = max(1, ceil(K s_k)) kernel
    draws, then K_j = round(K s_j) (at most what is left) and K_m = K - K_k - K_j."""
    n_kernel = max(1, math.ceil(K * shares[0]))
    n_joint = min(round(K * shares[1]), K - n_kernel)
    return n_kernel, n_joint, K - n_kernel - n_joint


def _row_counts(K: int, counts: tuple[int, int, int], rho: Tensor | None, device: torch.device) -> Tensor:
    """Draws per row and part (B, 3): (kernel, joint, marginal). Without ``rho``, ``counts`` in every row.
    With it, the kernel gets n_k = max(counts[0], ceil(K rho)) draws, and the rest R = K - n_k is split
    between the fits in the ratio of ``counts`` (joint floor(R counts[1] / (counts[1] + counts[2])), so no
    row ever asks a fit for more draws than ``counts`` gives it."""
    if rho is None:
        return torch.tensor([counts], device=device)
    n_kernel = torch.ceil(K * rho.nan_to_num(0.0).double()).long().clamp(counts[0], K)
    rest = K - n_kernel
    n_joint = rest * counts[1] // (counts[1] + counts[2])
    return torch.stack([n_kernel, n_joint, rest - n_joint], 1)


def _assemble(kernel: Tensor, rows: Tensor, fitted: list[tuple[int, Tensor]]) -> Tensor:
    """The K draws of each row (B, K, d): its first n_k kernel draws, then its n_j joint and n_m marginal
    draws. ``fitted`` holds (part, draws) for the parts drawn (1 joint, 2 marginal); a row takes a prefix
    of each part's draws, starting at position rows[:, :part].sum()."""
    B, K, d = kernel.shape
    pos = torch.arange(K, device=kernel.device)[None, :, None]  # (1, K, 1)
    out = kernel
    for part, draws in fitted:
        start = rows[:, :part].sum(1)[:, None, None]  # (B or 1, 1, 1)
        idx = (pos - start).clamp(0, draws.shape[1] - 1).expand(B, K, d)
        out = torch.where(pos >= start, torch.gather(draws, 1, idx), out)
    return out


def draw(
    target: Boltzmann,
    x_t: Tensor,
    t: float | Tensor,
    *,
    path: GaussianPath,
    K: int,
    generator: Generator = None,
    need_score: bool = True,
    prior_samples: Tensor | None = None,
    mixture: tuple[float, float, float] = MIXTURE,
    adaptive: bool = True,
    check: bool = True,
) -> ImportanceDraws:
    """Draw K endpoints from the proposal and weight them against the data posterior q1(x1 | x_t).

    The posterior is q1(x1 | x_t) ∝ p1(x1) k(x1) with k the reverse Gaussian kernel
    N(x_t / alpha_t, sigma^2 I), sigma = beta_t / alpha_t.

    **Kernel proposal** (``prior_samples=None``, the paper's): all K draws from k, so the weight is p1::

        x0^k ~ N(0, I),   x1^k = (x_t - beta_t x0^k) / alpha_t,   log w_k = log p1(x1^k)

    **Defensive mixture** (``prior_samples`` given, our addition): K_k draws from k, K_j from the joint fit
    g_j and K_m from the marginal fit g_m of the particles, each multiplied by k and normalised
    (:class:`ParticleProposal`; counts :func:`mixture_counts`, shares :data:`MIXTURE` = 1/4, 1/4, 1/2),
    weighted by the balance heuristic against the mixture r = (K_k k + K_j g_j + K_m g_m) / K actually
    sampled::

        log w_k = log p1(x1^k) + log k(x1^k) - log r(x1^k)

    Because r >= (K_k / K) k, every weight is at most (K / K_k) p1: a poor fit of the particles costs
    accuracy but never makes the weights worse than (K / K_k) times the kernel's own. The K kernel noises
    are drawn first in every case, so a generator in the same state gives the same first K_k kernel draws
    with or without particles (common random numbers for comparisons). In both cases
    x0^k = (x_t - alpha_t x1^k) / beta_t (the noise that would produce x_t) and the posterior score is
    ``s1^k = grad log p1(x1^k) + (alpha_t / beta_t) x0^k``; w = softmax(log w), ESS = 1 / Σ w^2.

    The shares are a choice, made by comparing a few splits by the velocity-unit MSE against exact answers
    on two moons, the ring and the d = 6 product target (an exploration whose script is not kept);
    ``benchmarks/estimators.py`` scores the chosen default on targets not used for the choice, and
    notebook 06 trains with it. ``mixture=(0.5, 0.5, 0.0)`` is close to the joint-only mixture of earlier
    versions (which also kept all K kernel draws where sigma <= min_j h_j).

    **Adaptive kernel share** (``adaptive=True``, the default): in each row the kernel's share rises from
    ``mixture[0]`` to rho, the kernel's predicted efficiency ESS / K (:func:`kernel_efficiency`, computed
    from the particles' fits before any draw), and the fits share the rest in the ratio of ``mixture``.
    The reason: by Kong's rule of thumb the kernel-only estimate has about 1 / rho times the variance of
    K exact posterior draws, so no proposal can gain more than a factor 1 / rho over it; the defensive
    bound above caps what the fits can cost at K / K_k = 1 / share. Share = max(mixture[0], rho) makes the
    worst loss no larger than the best possible gain wherever the kernel is good (large t, where rho -> 1
    and the row becomes kernel-only), and leaves the small-t mixture as it was (rho -> 0). Each row's fit
    draws are a prefix of those drawn for ``mixture``'s counts, so ``adaptive=False`` and rows with
    rho <= mixture[0] see exactly the draws of the fixed shares.

    Shapes: ``x_t``: (B, d); ``t``: float or (B,); ``prior_samples``: (B, M, d). Returns draws (B, K, d).
    ``mixture``: shares (kernel, joint, marginal), non-negative, summing to 1, kernel share > 0.
    ``check=False`` skips the tests that read values back from the device (finiteness, t in (0, 1)).
    """
    if not isinstance(target, Boltzmann):
        raise TypeError(f"target must be a rfm_teach.targets.Boltzmann; got {type(target).__name__}")
    if not isinstance(x_t, Tensor):
        raise TypeError(f"x_t must be a torch.Tensor of shape (B, d); got {type(x_t).__name__}")
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be a rfm_teach.paths.GaussianPath; got {type(path).__name__}")
    _check_k(K)
    tt = as_time(t, x_t, check=check)  # (B, 1), validated in (0, 1)
    if check and not bool(torch.isfinite(x_t).all()):
        raise ValueError("x_t contains NaN or inf")
    x_t = x_t.detach()
    batch, dim = x_t.shape
    if prior_samples is not None:
        prior_samples = _check_prior_samples(prior_samples, x_t, check)
    alpha, beta = path.alpha(tt), path.beta(tt)
    counts = (K, 0, 0) if prior_samples is None else mixture_counts(K, check_mixture(mixture))
    x0 = seeds.randn((batch, K, dim), generator, dtype=x_t.dtype, device=x_t.device)
    x1 = (x_t[:, None, :] - beta[:, None] * x0) / alpha[:, None]
    log_correction = None
    if counts[0] < K:
        sigma, centre = beta / alpha, x_t / alpha
        rows = _row_counts(K, counts, kernel_efficiency(prior_samples, centre, sigma) if adaptive else None,
                           x_t.device)  # (B, 3)
        fits = [(part, ParticleProposal.fit(prior_samples, centre, sigma, factorised=part == 2)) for part in (1, 2) if counts[part]]
        x1 = _assemble(x1, rows, [(part, fit.sample(counts[part], generator)) for part, fit in fits])
        x0 = (x_t[:, None, :] - alpha[:, None] * x1) / beta[:, None]
        log_k = _log_normal(x1, centre[:, None], sigma[:, None] ** 2)  # (B, K)
        log_share = torch.log(rows.double() / K).to(x1.dtype)  # (B, 3); -inf for a part with no draws in that row
        parts = [log_k + log_share[:, :1], *(fit.log_density(x1) + log_share[:, part:part + 1] for part, fit in fits)]
        log_correction = log_k - torch.logsumexp(torch.stack(parts), 0)
    if need_score:
        log_w, grad_log_p = target.log_density_and_score(x1)
        score = grad_log_p + (alpha / beta)[:, None] * x0
    else:
        with torch.no_grad():
            log_w = target.log_density(x1)
        grad_log_p = score = None
    if log_correction is not None:
        log_w = log_w + log_correction
    w = torch.softmax(log_w, dim=-1)  # log-sum-exp inside: finite for any finite log-weights
    return ImportanceDraws(x_t, tt, x0, x1, log_w, w, alpha, beta, grad_log_p, score)


def check_mixture(mixture) -> tuple[float, float, float]:
    """The shares (kernel, joint fit, marginal fit) as a tuple of floats; ValueError unless kernel > 0, the
    others >= 0 and the three sum to 1."""
    try:
        shares = tuple(float(v) for v in mixture)
    except (TypeError, ValueError):
        shares = ()
    if len(shares) != 3 or min(shares) < 0 or shares[0] <= 0 or abs(sum(shares) - 1) > 1e-6:
        raise ValueError(f"mixture must be three shares (kernel > 0, joint >= 0, marginal >= 0) summing to 1; got {mixture!r}")
    return shares


def _check_prior_samples(prior_samples: Tensor, x_t: Tensor, check: bool) -> Tensor:
    if not isinstance(prior_samples, Tensor):
        raise TypeError(f"prior_samples must be a torch.Tensor of shape (B, M, d) or None; got {type(prior_samples).__name__}")
    batch, dim = x_t.shape
    if prior_samples.dim() != 3 or prior_samples.shape[0] != batch or prior_samples.shape[2] != dim or prior_samples.shape[1] < 1:
        raise ValueError(
            f"prior_samples must have shape (B, M, d) = ({batch}, M >= 1, {dim}) to match x_t; got {tuple(prior_samples.shape)}"
        )
    if check and not bool(torch.isfinite(prior_samples).all()):
        raise ValueError("prior_samples contains NaN or inf")
    return prior_samples.detach().to(x_t.dtype)


def noise_expectation(draws: ImportanceDraws) -> Tensor:
    """Noise-expectation (plain SNIS) estimate mu1 ≈ Σ_k w_k x1^k, shape (B, d).

    Equivalently mu0 ≈ Σ_k w_k x0^k: the weighted average of noise that QNE / SDAC regress onto.
    """
    return torch.einsum("bk,bkd->bd", draws.w, draws.x1)


def gradient_expectation(draws: ImportanceDraws) -> Tensor:
    """Gradient-expectation (Tweedie / target-score) estimate, shape (B, d)::

        mu1 ≈ x_t / alpha_t + (beta_t / alpha_t)^2 Σ_k w_k grad log p1(x1^k)

    It uses the weighted Q-gradients instead of the weighted endpoints. With alpha_t = 1 (VE) it is
    the iDEM / DQS estimator. It equals the control-variate estimator with c = (beta_t / alpha_t)^2.
    """
    if draws.grad_log_p is None:
        raise ValueError("these draws carry no gradients; call draw(..., need_score=True)")
    ratio2 = (draws.beta / draws.alpha) ** 2
    return draws.x_t / draws.alpha + ratio2 * torch.einsum("bk,bkd->bd", draws.w, draws.grad_log_p)


def stein_control_variate(draws: ImportanceDraws) -> Tensor:
    """Σ_k w_k s1^k, the SNIS estimate of E_q1[s1], shape (B, d). Its exact value is zero (Stein)."""
    if draws.score is None:
        raise ValueError("these draws carry no scores; call draw(..., need_score=True)")
    return torch.einsum("bk,bkd->bd", draws.w, draws.score)


def plugin_coefficient(draws: ImportanceDraws, ridge: float = 1e-4, clip: float = 2.0) -> Tensor:
    """The paper's per-dimension plug-in minimum-variance coefficient, shape (B, d)::

        c_j = - Σ_k w_k^2 (x1_j^k - m_j)(s_j^k - s̄_j) / (Σ_k w_k^2 (s_j^k - s̄_j)^2 + ridge),  |c_j| <= clip

    with m = Σ w x1 and s̄ = Σ w s1. It minimises the delta-method variance of SNIS,
    (1/K) E[w̄^2 (x + c s - mu)^2], with the expectations replaced by the same K draws. Defaults
    (ridge 1e-4, clip 2) are those of the authors' config. When one draw carries all the weight
    (ESS ≈ 1) both sums are ≈ 0 and c is noise: see :func:`auto_coefficient`. With ridge = 0 a
    denominator of exactly 0 (then the numerator is 0 too, by Cauchy–Schwarz) gives c = 0, not NaN.
    """
    if draws.score is None:
        raise ValueError("these draws carry no scores; call draw(..., need_score=True)")
    w2 = draws.w[..., None] ** 2
    dx = draws.x1 - noise_expectation(draws)[:, None]
    ds = draws.score - stein_control_variate(draws)[:, None]
    denominator = ((w2 * ds * ds).sum(1) + ridge).clamp_min(torch.finfo(dx.dtype).tiny)
    return (-(w2 * dx * ds).sum(1) / denominator).clamp(-clip, clip)


def _spread_ratio(draws: ImportanceDraws, c: Tensor, nu: Tensor) -> Tensor:
    """Σ_k ν_k |y_k - ȳ|^2 / Σ_k ν_k |x1^k - x̄|^2 with y_k = x1^k + c ⊙ s1^k, weights ν (B, K). Shape (B,)."""

    def spread(z: Tensor) -> Tensor:
        centre = torch.einsum("bk,bkd->bd", nu, z)
        return torch.einsum("bk,bk->b", nu, ((z - centre[:, None]) ** 2).sum(-1))

    corrected = draws.x1 + c[:, None] * draws.score
    return spread(corrected) / spread(draws.x1).clamp_min(torch.finfo(c.dtype).tiny)


def _ramp(r: Tensor, lo: float, hi: float) -> Tensor:
    """1 for r <= lo, 0 for r >= hi, linear in between."""
    return torch.clamp((hi - r) / (hi - lo), 0.0, 1.0)


def coefficient_upper_end(draws: ImportanceDraws, z: float = 3.0) -> Tensor:
    """The largest c that :func:`auto_coefficient` keeps, per dimension, shape (B, d)::

        max((beta_t / alpha_t)^2, V (1 + z sqrt(2 / ESS))),   V_j = Σ_k w_k (x1_j^k - m_j)^2 / (1 - Σ_k w_k^2)

    V is the weighted estimate of the posterior variance (the denominator removes its small-sample bias,
    as n - 1 does for equal weights), the minimum-variance c of a Gaussian posterior. V is itself an
    estimate: from n Gaussian draws a variance estimate has a relative standard error of about sqrt(2 / n),
    and weighted draws are worth about ESS of them. The bound is therefore V's upper confidence end, z
    standard errors above it. z = 0 is V itself, the bound of earlier versions, which clipped the right c
    wherever V fell below the true variance by chance: near t = 1, where c* is within a few percent of
    (beta/alpha)^2, that cost up to about 3x in error against the plug-in c. z = 3 (a one-sided 99.9 %
    bound for a Gaussian V) is the default because z = 2 still clipped often enough to cost 1.27-1.38x
    on the d = 6 product target at t = 0.98 (the case of ``tests/test_estimators.py`` with three seeds, an
    exploration whose script is not kept), and z = 3 cost at most 1.03x there; ``benchmarks/estimators.py``
    and ``benchmarks/estimators_late.py`` score z = 3 (and estimators.py z = 0) on every cell.
    Where one draw carries nearly all the weight, 1 - Σ w^2 -> 0 and V is large (huge once that
    difference rounds to 0): there the projection only keeps c >= 0, and the tests of
    :func:`auto_coefficient` decide.
    """
    spread = torch.einsum("bk,bkd->bd", draws.w, (draws.x1 - noise_expectation(draws)[:, None]) ** 2)
    variance = spread / (1 - (draws.w**2).sum(-1, keepdim=True)).clamp_min(torch.finfo(spread.dtype).tiny)
    if z:
        variance = variance * (1 + z * (2 / draws.ess[:, None]).sqrt())
    return torch.maximum(((draws.beta / draws.alpha) ** 2).expand_as(variance), variance)


def auto_coefficient(
    draws: ImportanceDraws,
    ridge: float = 1e-4,
    clip: float = 2.0,
    *,
    min_ess: float = 5.0,
    gates: frozenset[str] = AUTO_GATES,
    upper_z: float = 3.0,
) -> Tensor:
    """Our robust coefficient (the default): the plug-in c, kept only where the draws support it. (B, d).

    The plug-in c is estimated from the same K draws. When a few draws carry all the weight (small t,
    ESS ≈ 1) it is noise, and c ⊙ s̄ then moves the estimate far past anything the draws support,
    because at small t the target's score is huge. The steps, all computed from the draws:

    0. **The paper's ridge** (1e-4) in the plug-in. Where the weights have collapsed (one weight near 1,
       the others below rounding error) both sums of the plug-in are rounding noise; the ridge sends c
       to 0 there. It also shrinks c by a factor of about 1 - ridge / Σ_k w_k^2 (s - s̄)^2: on a Gaussian
       target, where ridge 0 gives the exact mean, that leaves an error of order 1e-9 of one exact draw.
       The ablation in ``benchmarks/estimators.py`` (auto with ridge 0) measures both sides.
    1. **Stay where the optimum can be.** Project c per dimension onto [0, max((beta_t/alpha_t)^2, V_j^+)]
       (:func:`coefficient_upper_end`; V_j the weighted estimate of the posterior variance, V_j^+ its upper
       confidence end, ``upper_z`` standard errors above it). For a
       Gaussian posterior the optimum is that variance, c* = 1/P = 1/(S^-1 + alpha^2/beta^2) <=
       (beta/alpha)^2: a convex mix of noise- and gradient-expectation. Where log p1 is locally convex
       (between two modes) the posterior is wider than the kernel and c* exceeds (beta/alpha)^2; V
       estimates it there. Where one draw carries nearly all the weight V is large and the tests below decide.
    2. **Does the control variate explain the spread of the draws?** With y_k = x1^k + c ⊙ s1^k, compare
       the spread of y with that of x1, once with uniform weights over all K draws (R_u, informative
       even when ESS ≈ 1: a wrong c scatters the far draws, whose scores are large) and once with the
       importance weights (R_w, informative once a few draws carry weight).
    3. **Keep c where a test passes**, shrink it to 0 where all fail::

           f = max( ramp(R_u; 0.5 -> 1.0),
                    ramp(R_w; 1.2 -> 1.5) · [ESS >= min_ess],      (enough draws: only veto a clear loss)
                    ramp(R_w; 0.1 -> 0.3) · [ESS >= 2.5] )          (few draws: demand a near-perfect fit)
           c_auto = f · c

       (ramp(r; lo -> hi) is 1 below lo and 0 above hi.) With f = 0 the estimate is plain SNIS.
    4. **Or the coefficient is reproducible.** Estimate c (projected as in 1) separately on the even and
       odd draws; if the two halves agree (relative gap below 25%, ramping to 0 at 50%, every
       dimension), the score is locally linear where the weight is, and c is kept whatever the spread
       tests say. This rescues tail points at large t where ESS is only 1-3 but the plug-in is right.

    ``upper_z=0`` projects onto V itself (earlier versions; the ablation in ``benchmarks/estimators.py``).
    ``gates`` switches the four tests (``"uniform"`` R_u, ``"weighted"`` R_w with ESS >= min_ess, ``"few"``
    R_w with ESS >= 2.5, ``"split"``) on and off, for the ablation in ``benchmarks/estimators.py`` that
    shows what each one earns.

    The thresholds were chosen by measuring against exact answers on the 2D toys
    (``benchmarks/estimators.py``, whose table is in the README), not derived; they are the honest
    weak point of this design. Derived and measured in notebooks/05_stein_control_variates.ipynb.
    """
    upper = coefficient_upper_end(draws, upper_z)

    def projected_plugin(d: ImportanceDraws) -> Tensor:
        return torch.minimum(plugin_coefficient(d, ridge, clip).clamp_min(0.0), upper)

    c = projected_plugin(draws)
    uniform = torch.full_like(draws.w, 1.0 / draws.w.shape[1])
    r_w = _spread_ratio(draws, c, draws.w)
    keep = torch.zeros_like(r_w)
    if "uniform" in gates:
        keep = torch.maximum(keep, _ramp(_spread_ratio(draws, c, uniform), 0.5, 1.0))
    if "weighted" in gates:
        keep = torch.maximum(keep, _ramp(r_w, 1.2, 1.5) * (draws.ess >= min_ess).to(c.dtype))
    if "few" in gates:
        keep = torch.maximum(keep, _ramp(r_w, 0.1, 0.3) * (draws.ess >= 2.5).to(c.dtype))
    K = draws.x1.shape[1]
    if K >= 4 and "split" in gates:
        idx = torch.arange(K, device=c.device)
        c_even, c_odd = projected_plugin(draws.subset(idx[0::2])), projected_plugin(draws.subset(idx[1::2]))
        gap = ((c_even - c_odd).abs() / (0.5 * (c_even + c_odd)).clamp_min(torch.finfo(c.dtype).tiny)).amax(-1)
        keep = torch.maximum(keep, _ramp(gap, 0.25, 0.5))
    return c * keep[:, None]


def combine(draws: ImportanceDraws, c: Tensor) -> Tensor:
    """The unified estimator Σ_k w_k (x1^k + c ⊙ s1^k) for a coefficient c of shape (B, d) or (B, 1)."""
    mean = noise_expectation(draws)
    if draws.score is None:
        raise ValueError("combine needs scores; call draw(..., need_score=True) (or use noise_expectation)")
    return mean + c * stein_control_variate(draws)


def qsm_mean(target: Boltzmann, x_t: Tensor, t: float | Tensor, *, path: GaussianPath | None = None,
             check: bool = True) -> Tensor:
    """The QSM target (Psenka et al., Q-score matching): the score of p1 taken at the noisy point itself. (B, d).

    QSM regresses the policy's score at x_t onto grad_a Q(x_t) / temperature, with no posterior
    averaging. Written as a posterior mean through Tweedie, grad log p_t(x_t) = (alpha_t mu1 - x_t) / beta_t^2,
    it is the degenerate estimate::

        mu1_QSM = (x_t + beta_t^2 grad log p1(x_t)) / alpha_t

    It is exact only where p_t and p1 have the same score, i.e. as t -> 1. One Q-gradient per row.
    """
    path = LinearFlow() if path is None else path
    if not isinstance(target, Boltzmann):
        raise TypeError(f"target must be a rfm_teach.targets.Boltzmann; got {type(target).__name__}")
    tt = as_time(t, x_t, check=check)
    _, grad = target.log_density_and_score(x_t.detach()[:, None])
    return (x_t.detach() + path.beta(tt) ** 2 * grad[:, 0]) / path.alpha(tt)


def posterior_mean(
    target: Boltzmann,
    x_t: Tensor,
    t: float | Tensor,
    *,
    path: GaussianPath | None = None,
    K: int = 100,
    cv: CV = "auto",
    generator: Generator = None,
    ridge: float = 1e-4,
    clip: float = 2.0,
    prior_samples: Tensor | None = None,
    mixture: tuple[float, float, float] = MIXTURE,
    adaptive: bool = True,
    check: bool = True,
) -> PosteriorEstimate:
    """Estimate mu1 = E[x1 | x_t] for the Boltzmann target with K importance draws per row.

    Args:
        target: the Boltzmann target p1 ∝ exp(Q / temperature) (see :mod:`rfm_teach.targets`).
        x_t: noisy points, (B, d).
        t: flow time in (0, 1) (t = 1 is data), a float or a tensor of shape (B,).
        path: the Gaussian path (default :class:`~rfm_teach.paths.LinearFlow`).
        K: draws per row; K = 100 is the authors' default.
        cv: "none" (noise-expectation), "gradient" (gradient-expectation), "plugin" (the paper's
            coefficient), "auto" (ours, the default) or a float (a fixed c).
        generator: a ``torch.Generator`` for reproducible draws.
        ridge, clip: regularisation of the plug-in coefficient (authors' defaults 1e-4 and 2), for "plugin"
            and "auto".
        prior_samples: optional (B, M, d) approximate draws from p1 for each row, e.g. the policy's own
            particles (latent space). They turn the proposal into a defensive mixture of the reverse
            kernel and two densities fitted to them (see :func:`draw`), so the weights no longer collapse
            at small t or in higher dimensions. None gives the paper's kernel-only proposal.
        mixture: shares of the K draws (kernel, joint fit, marginal fit) when ``prior_samples`` are given.
        adaptive: raise the kernel's share in each row to the kernel's predicted efficiency (see
            :func:`draw`); False keeps the shares of ``mixture`` in every row.
        check: validate values (finiteness, t in (0, 1)); False skips every test that reads the device,
            for callers that validated at their own public boundary (the agent's update).

    Returns:
        :class:`PosteriorEstimate` with ``mean`` (B, d), ``ess`` (B,), ``c`` (B, d) and the draws.
    """
    path = LinearFlow() if path is None else path
    if isinstance(cv, str):
        if cv not in CV_MODES:
            raise ValueError(f"unknown cv {cv!r}; expected one of {CV_MODES} or a float")
    elif isinstance(cv, (int, float)) and not isinstance(cv, bool):
        if not math.isfinite(float(cv)):
            raise ValueError(f"a fixed cv must be finite; got {cv!r}")
    else:
        raise TypeError(f"cv must be one of {CV_MODES} or a float; got {cv!r}")
    if not (ridge >= 0 and clip > 0):
        raise ValueError(f"need ridge >= 0 and clip > 0; got ridge={ridge}, clip={clip}")
    draws = draw(target, x_t, t, path=path, K=K, generator=generator, need_score=cv != "none",
                 prior_samples=prior_samples, mixture=mixture, adaptive=adaptive, check=check)
    batch, dim = draws.x_t.shape
    if cv == "none":
        c = torch.zeros(batch, dim, dtype=x_t.dtype, device=x_t.device)
        mean = noise_expectation(draws)
    elif cv == "gradient":
        c = ((draws.beta / draws.alpha) ** 2).expand(batch, dim)
        mean = gradient_expectation(draws)
    else:
        if cv == "plugin":
            c = plugin_coefficient(draws, ridge, clip)
        elif cv == "auto":
            c = auto_coefficient(draws, ridge, clip)
        else:
            c = torch.full((batch, dim), float(cv), dtype=x_t.dtype, device=x_t.device)
        mean = combine(draws, c)
    return PosteriorEstimate(mean.detach(), draws.ess.detach(), c.detach(), draws)


