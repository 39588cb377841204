"""Gaussian probability paths x_t = alpha_t * x1 + beta_t * x0 (t = 1 is data, t = 0 is noise).

Every path in this module mixes a clean sample ``x1`` (data, an action) with Gaussian noise
``x0 ~ N(0, I)``. The four regression targets a policy can learn are all affine in the posterior
mean ``mu1 = E[x1 | x_t]``:

=========  ==========================================  ======================================
name       quantity                                     in terms of mu1
=========  ==========================================  ======================================
``x1``     E[x1 | x_t] (clean action, "a_0" in DDPM)    mu1
``x0``     E[x0 | x_t] (noise, "epsilon")               mu0 = (x_t - alpha_t mu1) / beta_t
``score``  grad log p_t(x_t)  (Tweedie)                 -mu0 / beta_t
``velocity`` marginal flow velocity v_t(x_t)            d_alpha_t mu1 + d_beta_t mu0
=========  ==========================================  ======================================

Derived in notebooks/02_probability_paths.ipynb.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "GaussianPath",
    "LinearFlow",
    "VPDiffusion",
    "VEDiffusion",
    "TargetKind",
    "TARGET_KINDS",
    "as_time",
    "make_path",
]

TargetKind = Literal["x1", "x0", "score", "velocity"]
TARGET_KINDS: tuple[str, ...] = ("x1", "x0", "score", "velocity")


def as_time(t: float | Tensor, x_t: Tensor, *, check: bool = True) -> Tensor:
    """Validate the flow time ``t`` and return it as a column of shape (B, 1) matching ``x_t``.

    ``t`` may be a Python float (one time for the whole batch) or a tensor of shape (B,) or (B, 1).
    Every path here is singular at t = 0 (alpha_0 = 0, or sigma at its largest) or t = 1 (beta_1 = 0),
    so t must lie strictly inside (0, 1). ``check=False`` skips that range test on a tensor ``t`` (it
    reads the tensor back to the host): for hot paths whose caller validated t at its own boundary.
    """
    if x_t.dim() != 2:
        raise ValueError(f"x_t must have shape (B, d); got shape {tuple(x_t.shape)}")
    batch = x_t.shape[0]
    if isinstance(t, Tensor):
        t_col = t.to(dtype=x_t.dtype, device=x_t.device)
        if t_col.dim() == 0:
            t_col = t_col.expand(batch)
        if t_col.dim() == 2 and t_col.shape[1] == 1:
            t_col = t_col[:, 0]
        if t_col.shape != (batch,):
            raise ValueError(
                f"t must be a float or a tensor of shape (B,) = ({batch},); got shape {tuple(t.shape)}"
            )
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        if not 0 < float(t) < 1:
            raise ValueError(f"t must lie strictly inside (0, 1) (t = 1 is data, t = 0 is noise); got t = {t!r}")
        return torch.full((batch, 1), float(t), dtype=x_t.dtype, device=x_t.device)
    else:
        raise TypeError(f"t must be a float or a torch.Tensor; got {type(t).__name__}")
    if not check:
        return t_col[:, None]
    bad = ~((t_col > 0) & (t_col < 1))
    if bool(bad.any()):
        raise ValueError(
            f"t must lie strictly inside (0, 1) (t = 1 is data, t = 0 is noise); "
            f"got t = {t_col[bad][0].item()!r}"
        )
    return t_col[:, None]


class GaussianPath(ABC):
    """A Gaussian path x_t = alpha_t x1 + beta_t x0 with x0 ~ N(0, I); t = 1 is data.

    Subclasses give ``alpha``, ``beta`` and their time derivatives. All methods take ``t`` as a tensor
    broadcastable against the values (usually (B, 1)) and work in any dtype.
    """

    name: str = "path"

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Signal coefficient alpha_t."""

    @abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """Noise coefficient beta_t."""

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """Time derivative d alpha_t / dt."""

    @abstractmethod
    def d_beta(self, t: Tensor) -> Tensor:
        """Time derivative d beta_t / dt."""

    def interpolate(self, x1: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x1 + beta_t x0 (the forward, noising direction)."""
        return self.alpha(t) * x1 + self.beta(t) * x0

    def conditional_velocity(self, x1: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """d x_t / dt for one (x1, x0) pair: d_alpha_t x1 + d_beta_t x0."""
        return self.d_alpha(t) * x1 + self.d_beta(t) * x0

    def convert(self, value: Tensor, x_t: Tensor, t: Tensor, *, src: TargetKind, dst: TargetKind) -> Tensor:
        """Convert a regression target between the four parameterisations at (x_t, t).

        Equations (mu1 = E[x1|x_t], mu0 = E[x0|x_t]; x_t = alpha mu1 + beta mu0 holds exactly)::

            x0       = (x_t - alpha x1) / beta
            score    = -x0 / beta
            velocity = d_alpha x1 + d_beta x0

        Shapes: ``value``, ``x_t``: (B, d); ``t``: (B, 1) (use :func:`as_time`). Returns (B, d).
        """
        for name, kind in (("src", src), ("dst", dst)):
            if kind not in TARGET_KINDS:
                raise ValueError(f"{name} must be one of {TARGET_KINDS}; got {kind!r}")
        if src == dst:
            return value
        a, b, da, db = self.alpha(t), self.beta(t), self.d_alpha(t), self.d_beta(t)
        # First bring everything to mu1, then out to the requested kind.
        if src == "x1":
            mu1 = value
        elif src == "x0":
            mu1 = (x_t - b * value) / a
        elif src == "score":
            mu1 = (x_t + b * b * value) / a  # mu0 = -beta * score
        else:  # velocity: v = da mu1 + db (x_t - a mu1)/b  =>  mu1 = (v - db x_t / b) / (da - db a / b)
            mu1 = (value - db * x_t / b) / (da - db * a / b)
        if dst == "x1":
            return mu1
        mu0 = (x_t - a * mu1) / b
        if dst == "x0":
            return mu0
        if dst == "score":
            return -mu0 / b
        return da * mu1 + db * mu0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearFlow(GaussianPath):
    """The straight (rectified-flow) path: alpha_t = t, beta_t = 1 - t.

    This is the path RFM's flow policies use. Its marginal velocity is
    v_t(x) = (mu1 - x) / (1 - t) = (x - mu0) / t.
    """

    name = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def beta(self, t: Tensor) -> Tensor:
        return 1 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_beta(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


class VPDiffusion(GaussianPath):
    """Variance-preserving diffusion (DDPM's continuous linear schedule) written with t = 1 as data.

    With diffusion time s = 1 - t and abar(s) = exp(-(beta_min s + (beta_max - beta_min) s^2 / 2)):
    alpha_t = sqrt(abar), beta_t = sqrt(1 - abar), so alpha_t^2 + beta_t^2 = 1.
    Defaults beta_min = 0.1, beta_max = 20 are those of Song et al. (2021); at t -> 0, alpha_t is
    about 6.6e-3, so the path starts at (almost) pure noise rather than exactly at it.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not (0 < beta_min < beta_max):
            raise ValueError(f"need 0 < beta_min < beta_max; got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _log_abar(self, t: Tensor) -> Tensor:
        s = 1 - t
        return -(self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s)

    def _rate(self, t: Tensor) -> Tensor:  # -d log abar / ds, the instantaneous noise rate
        return self.beta_min + (self.beta_max - self.beta_min) * (1 - t)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._log_abar(t))

    def beta(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._log_abar(t)))  # sqrt(1 - abar), accurate near t = 1

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * self.alpha(t) * self._rate(t)

    def d_beta(self, t: Tensor) -> Tensor:
        abar = torch.exp(self._log_abar(t))
        return -0.5 * abar * self._rate(t) / self.beta(t)

    def __repr__(self) -> str:
        return f"VPDiffusion(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VEDiffusion(GaussianPath):
    """Variance-exploding diffusion: alpha_t = 1, beta_t = sigma(t), geometric from sigma_max to sigma_min.

    sigma(t) = sigma_max * (sigma_min / sigma_max) ** t, so t = 0 is the widest noise and t = 1 the
    narrowest (x_t = x1 + sigma_min x0, not exactly data). With alpha_t = 1 the gradient-expectation
    estimator of this path is the one DQS and iDEM use.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 5.0) -> None:
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def beta(self, t: Tensor) -> Tensor:
        return self.sigma_max * (self.sigma_min / self.sigma_max) ** t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_beta(self, t: Tensor) -> Tensor:
        return self.beta(t) * math.log(self.sigma_min / self.sigma_max)

    def __repr__(self) -> str:
        return f"VEDiffusion(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


_PATHS = {"linear": LinearFlow, "vp": VPDiffusion, "ve": VEDiffusion}


def make_path(name: str) -> GaussianPath:
    """Build a path by name: ``"linear"`` (flow), ``"vp"`` or ``"ve"`` (diffusion)."""
    if name not in _PATHS:
        raise ValueError(f"unknown path {name!r}; expected one of {sorted(_PATHS)}")
    return _PATHS[name]()
