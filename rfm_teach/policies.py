"""Flow and diffusion policies trained by regression onto an RFM posterior-mean target.

Both policies share one network and one loss. Only the path and the quantity the network predicts
differ:

===================  =====================  ========================  ===============================
class                path (t = 1 is data)   network predicts          regression target (detached)
===================  =====================  ========================  ===============================
:class:`FlowPolicy`  LinearFlow (t, 1 - t)  velocity v(t, u_t)        v* = (mu1_hat - u_t) / (1 - t)
:class:`DiffusionPolicy` VPDiffusion        noise eps = E[u0 | u_t]   eps* = (u_t - alpha_t mu1_hat) / beta_t
===================  =====================  ========================  ===============================

The loss is the same for both (the paper's RFM-D loss, Section 4; derived in notebooks/06_fixed_target.ipynb)::

    t ~ U[t_min, 1 - t_min],  u0 ~ N(0, I),  u_t = alpha_t u1 + beta_t u0
    mu1_hat = posterior_mean(target, u_t, t, path, K, cv, prior_samples)   # rfm_teach.estimators
    L(theta) = mean over batch and dimensions of (net_theta(s, u_t, t, lambda) - stopgrad(target(mu1_hat)))^2

The endpoint u1 only decides *where* u_t is drawn (any full-support distribution of u_t has the same
minimiser, the paper's Prop. 4.1 / Thm. 4.2); what the network learns comes from the target density alone,
and it learns the right velocity only as far as the target is unbiased (regression averages away the
estimator's variance, not its bias). ``cv`` switches between noise-expectation (``"none"``),
gradient-expectation (``"gradient"``) and RFM (``"plugin"``, the paper's; ``"auto"``, ours);
``prior_samples`` (the policy's own particles) switches the proposal from the paper's reverse kernel to
a defensive mixture of the kernel and two densities fitted to those particles (joint and marginal).

Shapes: ``obs`` (B, ds) with ds possibly 0, ``u_t`` (B, d), ``t`` (B,), ``temperature`` a float or (B,).
The policy works in the latent space u; with ``squash=True`` actions are a = tanh(u) and the target
must be a squashed :class:`~rfm_teach.targets.Boltzmann` (its tanh Jacobian is in the weights).

Derived in notebooks/06_fixed_target.ipynb.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import seeds
from .estimators import MIXTURE, PosteriorEstimate, posterior_mean
from .paths import GaussianPath, LinearFlow, VPDiffusion
from .seeds import Generator, SeedLinear
from .targets import Boltzmann

__all__ = ["sinusoidal_embedding", "PolicyNet", "FlowPolicy", "DiffusionPolicy", "time_grid", "euler", "heun", "ddim"]

#: A velocity (or noise) field as the samplers see it: (u (N, d), t a Python float) -> (N, d).
Field = Callable[[Tensor, float], Tensor]

#: t is embedded as sinusoidal_embedding(DEFAULT_TIME_SCALE * t); see :class:`PolicyNet`.
DEFAULT_TIME_SCALE = 1000.0


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """[sin(x f_i), cos(x f_i)] with f_i = exp(-log(max_period) i / (dim/2 - 1)), i = 0 .. dim/2 - 1.

    Shapes: ``x`` (B,) -> (B, dim). The frequencies span 1 down to 1/max_period (the authors' actor,
    azizanlab/ReverseFlowMatching, uses dim 128 and max_period 1000).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=x.dtype, device=x.device) / max(half - 1, 1))
    arg = x[:, None] * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], -1)


class PolicyNet(nn.Module):
    """The authors' actor ("ScoreMLP"): [s, u_t, emb(t), emb(lambda)] -> Dense + GELU -> residual blocks -> Dense d.

    Embeddings. ``time_scale`` multiplies t before the sinusoidal embedding (frequencies 1 .. 1/1000).
    The authors feed t in [0, 1] directly (``time_scale=1``), which makes emb(t) almost linear in t;
    we feed 1000 t (frequencies 1000 .. 1 on t), meaning to let the net resolve how the target changes
    near t = 1, where the velocity target changes fastest. Both are one argument away. Measured, the
    authors' choice fits better: on two moons the exact-posterior oracle ends closer to the target with
    emb(t) on each of three seeds, in SW2 and TV (``python benchmarks/fixed_target.py --toys two_moons
    --seeds 0 1 2 --estimators exact --set time_scale=1,1000 --run-id oracle_time_scale``, stored in
    rfm_teach/results/fixed_target/oracle_time_scale and shown in notebook 06). The default stays 1000 t
    for now because every stored result was made with it; the agent records it
    (``AgentConfig.time_scale``, ``--agent.time-scale 1`` for the authors' embedding online).
    The temperature enters as log(lambda) (temperatures span decades; 0.02 in the authors' RL runs).

    Cost. The first layer is linear in the concatenation, so it is computed as three parts,
    W_x [s, u_t] + W_t emb(t) + W_l emb(log lambda): when t (or lambda) is one value for all rows
    (every ODE step of the sampler) pass a tensor of shape (1,) and its embedding and matmul are done
    once and broadcast, instead of once per row.
    Initialisation: orthogonal with gain sqrt(2) as the authors; the output layer with gain 1.
    """

    def __init__(self, obs_dim: int, act_dim: int, *, hidden: int = 256, n_blocks: int = 2, emb_dim: int = 128,
                 time_scale: float = DEFAULT_TIME_SCALE) -> None:
        super().__init__()
        for name, value, low in (("obs_dim", obs_dim, 0), ("act_dim", act_dim, 1), ("hidden", hidden, 1),
                                 ("n_blocks", n_blocks, 0), ("emb_dim", emb_dim, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sin and cos halves); got {emb_dim}")
        if not (isinstance(time_scale, (int, float)) and not isinstance(time_scale, bool) and time_scale > 0):
            raise ValueError(f"time_scale must be a number > 0; got {time_scale!r}")
        self.obs_dim, self.act_dim, self.emb_dim, self.time_scale = obs_dim, act_dim, emb_dim, float(time_scale)
        self.inp = SeedLinear(obs_dim + act_dim + 2 * emb_dim, hidden)
        self.blocks = nn.ModuleList(SeedLinear(hidden, hidden) for _ in range(n_blocks))
        self.out = SeedLinear(hidden, act_dim)
        with torch.no_grad():
            for layer in (self.inp, *self.blocks):
                nn.init.orthogonal_(layer.weight[0], gain=math.sqrt(2.0))
                nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(self.out.weight[0], gain=1.0)
            nn.init.zeros_(self.out.bias)

    def embed(self, t: Tensor, temperature: Tensor) -> Tensor:
        """First-layer contribution W_t emb(time_scale t) + W_l emb(log lambda): (S, N, hidden), or (S, 1, hidden) for (1,) inputs."""
        n_in, e = self.obs_dim + self.act_dim, self.emb_dim
        return (self.inp.part(sinusoidal_embedding(self.time_scale * t, e), slice(n_in, n_in + e))
                + self.inp.part(sinusoidal_embedding(torch.log(temperature), e), slice(n_in + e, None)))

    def forward(self, obs: Tensor, u_t: Tensor, t: Tensor, temperature: Tensor, *, embedded: Tensor | None = None) -> Tensor:
        """Shapes: obs (B, ds), u_t (B, d), t and temperature (B,) or (1,) -> (B, d). Inputs already validated.

        With S seeds (:mod:`rfm_teach.seeds`) the B rows are seed-major, B/S per seed.
        ``embedded``: a precomputed :meth:`embed` (e.g. once per ODE step); t and temperature are then unused.
        """
        n_in = self.obs_dim + self.act_dim
        emb = self.embed(t, temperature) if embedded is None else embedded
        h = self.inp.part(torch.cat([obs, u_t], -1), slice(0, n_in)) + self.inp.bias[:, None] + emb  # (S, B/S, hidden)
        h = F.gelu(h)
        for block in self.blocks:
            h = h + F.gelu(block(h))
        return self.out(h).reshape(-1, self.act_dim)


# ---- samplers as free functions: any velocity / noise field, no network needed -------------------


def time_grid(t_min: float, steps: int, *, end: float | None = None) -> list[float]:
    """``steps + 1`` equally spaced times from t_min to 1 - t_min (Python floats: no device read), then ``end`` if given."""
    t_min = float(t_min)
    grid = [t_min + (1 - 2 * t_min) * i / steps for i in range(steps + 1)]
    return grid + ([float(end)] if end is not None else [])


def euler(velocity: Field, u: Tensor, times: Sequence[float]) -> Tensor:
    """Explicit Euler for du/dt = velocity(u, t) over ``times``: u <- u + (t' - t) v(u, t).

    Shapes: ``u`` (N, d) -> (N, d). ``times`` increasing Python floats (see :func:`time_grid`).
    """
    for t0, t1 in zip(times[:-1], times[1:]):
        u = u + (t1 - t0) * velocity(u, t0)
    return u


def heun(velocity: Field, u: Tensor, times: Sequence[float]) -> Tensor:
    """Heun (explicit trapezoid) for du/dt = velocity(u, t): predict with Euler, correct with the mean slope.

    u_pred = u + h v(u, t);  u <- u + h/2 (v(u, t) + v(u_pred, t + h)). Two field calls per step.
    """
    for t0, t1 in zip(times[:-1], times[1:]):
        h = t1 - t0
        v0 = velocity(u, t0)
        u = u + 0.5 * h * (v0 + velocity(u + h * v0, t1))
    return u


def ddim(eps: Field, u: Tensor, times: Sequence[float], path: GaussianPath) -> Tensor:
    """Deterministic DDIM steps with a noise predictor eps(u, t) ≈ E[u0 | u_t] on ``path``::

        u1_hat = (u - beta_t eps) / alpha_t,   u <- alpha_t' u1_hat + beta_t' eps

    One call of ``eps`` per step, at each time but the last. A last time of 1.0 (alpha = 1, beta = 0)
    returns the denoised u1_hat itself. Shapes: ``u`` (N, d) -> (N, d).
    """
    for t0, t1 in zip(times[:-1], times[1:]):
        e = eps(u, t0)
        tt = torch.full((1, 1), t0, dtype=u.dtype, device=u.device)
        u1_hat = (u - path.beta(tt) * e) / path.alpha(tt)
        if t1 >= 1.0:
            u = u1_hat
        else:
            t1_col = torch.full((1, 1), t1, dtype=u.dtype, device=u.device)
            u = path.alpha(t1_col) * u1_hat + path.beta(t1_col) * e
    return u


class _PathPolicy(nn.Module):
    """Shared machinery: input checks, the network call, the RFM regression loss and ODE integration."""

    path: GaussianPath
    prediction: str  # the TargetKind the network outputs: "velocity" or "x0"
    solvers: tuple[str, ...]

    def __init__(self, obs_dim: int, act_dim: int, *, hidden: int, n_blocks: int, emb_dim: int,
                 t_min: float, squash: bool, time_scale: float) -> None:
        super().__init__()
        t_min = float(t_min)
        if not (0 < t_min < 0.5):
            raise ValueError(f"t_min must lie in (0, 0.5) (t is kept in [t_min, 1 - t_min]); got {t_min}")
        self.net = PolicyNet(obs_dim, act_dim, hidden=hidden, n_blocks=n_blocks, emb_dim=emb_dim, time_scale=time_scale)
        self.obs_dim, self.act_dim, self.t_min, self.squash = obs_dim, act_dim, t_min, bool(squash)

    # ---- validation at the public boundary --------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def n_seeds(self) -> int:
        """S, the seeds stacked in the network (:mod:`rfm_teach.seeds`); 1 for a policy built alone."""
        return self.net.inp.n_seeds

    def _check_obs(self, obs: Tensor) -> Tensor:
        if not isinstance(obs, Tensor):
            raise TypeError(f"obs must be a torch.Tensor of shape (B, {self.obs_dim}); got {type(obs).__name__}")
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (B, {self.obs_dim}); got {tuple(obs.shape)}")
        return obs.to(self._dtype)

    def _check_actions(self, x: Tensor, name: str, batch: int, check: bool = True) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape ({batch}, {self.act_dim}); got {type(x).__name__}")
        if x.shape != (batch, self.act_dim):
            raise ValueError(f"{name} must have shape (B, d) = ({batch}, {self.act_dim}); got {tuple(x.shape)}")
        if check and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or inf")
        return x.to(self._dtype)

    def _check_temperature(self, temperature: float | Tensor, batch: int, check: bool = True) -> Tensor:
        """(batch,) temperatures, (S,) one per seed, or (1,); a float gives a (1,) tensor. (1,) and (S,) are
        embedded once per seed and broadcast over the seed's rows."""
        if isinstance(temperature, Tensor):
            temp = temperature.to(self._dtype)
            if temp.dim() == 0:
                temp = temp.reshape(1)
            if temp.shape not in ((batch,), (1,), (self.n_seeds,)):
                raise ValueError(f"temperature must be a float or a tensor of shape ({batch},) (one per row) or "
                                 f"({self.n_seeds},) (one per seed); got {tuple(temperature.shape)}")
            if check and not bool(((temp > 0) & torch.isfinite(temp)).all()):
                raise ValueError(f"temperature must be finite and > 0; got {temperature!r}")
            return temp
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
            if not (float(temperature) > 0 and math.isfinite(float(temperature))):
                raise ValueError(f"temperature must be finite and > 0; got {temperature!r}")
            return torch.full((1,), float(temperature), dtype=self._dtype, device=self._device)
        raise TypeError(f"temperature must be a float or a torch.Tensor; got {type(temperature).__name__}")

    def _check_t(self, t: Tensor, batch: int) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"t must be a torch.Tensor of shape ({batch},); got {type(t).__name__}")
        if t.shape != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},); got {tuple(t.shape)}")
        if not bool(((t > 0) & (t < 1)).all()):
            raise ValueError("t must lie strictly inside (0, 1) (t = 1 is data, t = 0 is noise)")
        return t.to(self._dtype)

    # ---- the network ------------------------------------------------------------------------------
    def forward(self, obs: Tensor, u_t: Tensor, t: Tensor, temperature: float | Tensor) -> Tensor:
        """The network output at (s, u_t, t, lambda): a velocity (flow) or a noise prediction (diffusion). (B, d)."""
        obs = self._check_obs(obs)
        batch = obs.shape[0]
        u_t = self._check_actions(u_t, "u_t", batch)
        return self._net(obs, u_t, self._check_t(t, batch), self._check_temperature(temperature, batch))

    def _net(self, obs: Tensor, u_t: Tensor, t: Tensor, temperature: Tensor, *, embedded: Tensor | None = None) -> Tensor:
        """The policy's prediction: the network ``net(s, u_t, t, lambda)`` through :meth:`precondition`. (B, d)."""
        return self.precondition(self.net(obs, u_t, t, temperature, embedded=embedded), u_t, t)

    def precondition(self, out: Tensor, u_t: Tensor, t: Tensor) -> Tensor:
        """Map the raw network output to the prediction (identity here; see :class:`DiffusionPolicy`)."""
        return out

    # ---- the RFM regression loss ------------------------------------------------------------------
    def regression_target(self, u1: Tensor, target: Boltzmann, *, K: int = 100, cv="auto",
                          generator: Generator = None,
                          exact_mu1: Callable[[Tensor, Tensor], Tensor] | None = None,
                          prior_samples: Tensor | None = None, mixture: tuple[float, float, float] = MIXTURE,
                          adaptive: bool = True,
                          check: bool = True) -> tuple[Tensor, Tensor, Tensor, PosteriorEstimate | None]:
        """Draw (t, u_t) around the endpoints ``u1`` and compute the detached RFM regression target there.

        Equations (the paper's Section 4, data-posterior form)::

            t ~ U[t_min, 1 - t_min], u0 ~ N(0, I), u_t = alpha_t u1 + beta_t u0
            mu1_hat = posterior_mean(target, u_t, t, path, K, cv, prior_samples)
            y = velocity (flow) or eps = E[u0 | u_t] (diffusion) computed from mu1_hat

        Shapes: ``u1`` (B, d), ``prior_samples`` (B, M, d) or None -> (t (B,), u_t (B, d), y (B, d), the
        PosteriorEstimate). Draws t, then u0, then the K importance draws from ``generator``, in that order.

        ``prior_samples``: approximate draws from p1 per row in the latent space (the policy's own
        particles); they make the estimator's proposal a defensive mixture (see
        :func:`~rfm_teach.estimators.draw`). None is the paper's kernel-only proposal. ``mixture``: the
        shares of that mixture (kernel, joint fit, marginal fit); ``adaptive``: raise the kernel's share
        per row to its predicted efficiency (:func:`~rfm_teach.estimators.draw`).
        ``check=False`` skips every value check that reads the device (finiteness of u1 and y): for
        callers that validated at their own boundary, e.g. ``Agent.update``; shapes and types are
        still checked.
        ``exact_mu1(u_t, t) -> (B, d)``, if given, replaces the Monte Carlo estimate by an exact posterior
        mean (e.g. ``ExactGrid.posterior_mean``): the oracle that separates the estimator's error from
        the network's. The estimate is then None.
        """
        if not isinstance(target, Boltzmann):
            raise TypeError(f"target must be a rfm_teach.targets.Boltzmann; got {type(target).__name__}")
        if target.squash != self.squash:
            raise ValueError(
                f"the policy has squash={self.squash} but the target has squash={target.squash}: the latent "
                "density (tanh Jacobian included or not) must match how the policy turns u into actions"
            )
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"K (importance draws per row) must be an int >= 1; got {K!r}")
        if not isinstance(u1, Tensor) or u1.dim() != 2:
            raise ValueError(f"u1 must be a tensor of shape (B, {self.act_dim}); got {getattr(u1, 'shape', u1)!r}")
        batch = u1.shape[0]
        u1 = self._check_actions(u1, "u1", batch, check).detach()
        t = self.t_min + (1 - 2 * self.t_min) * seeds.rand((batch,), generator, dtype=self._dtype, device=self._device)
        u0 = seeds.randn((batch, self.act_dim), generator, dtype=self._dtype, device=self._device)
        u_t = self.path.interpolate(u1, u0, t[:, None])
        if exact_mu1 is None:
            est = posterior_mean(target, u_t, t, path=self.path, K=K, cv=cv, generator=generator,
                                 prior_samples=prior_samples, mixture=mixture, adaptive=adaptive, check=check)
            mu1 = est.mean
        else:
            est, mu1 = None, exact_mu1(u_t, t).to(u_t.dtype)
        # The target is a constant: no gradient may flow into the critic or back through u_t.
        y = self.path.convert(mu1, u_t, t[:, None], src="x1", dst=self.prediction).detach()
        if check and not bool(torch.isfinite(y).all()):
            raise FloatingPointError("the regression target has NaN or inf (check Q and the temperature)")
        return t, u_t, y, est

    def loss(self, obs: Tensor, u1: Tensor, target: Boltzmann, *, temperature: float | Tensor, K: int = 100, cv="auto",
             generator: Generator = None,
             exact_mu1: Callable[[Tensor, Tensor], Tensor] | None = None,
             prior_samples: Tensor | None = None, mixture: tuple[float, float, float] = MIXTURE,
             adaptive: bool = True, check: bool = True) -> tuple[Tensor, dict]:
        """Regress the network onto the RFM target at u_t drawn around the endpoints ``u1``.

        Equation (the paper's RFM loss, Section 4)::

            (t, u_t, y) = regression_target(u1, target, K, cv, prior_samples)      # y DETACHED
            L = mean over batch and dimensions of (net(s, u_t, t, lambda) - y)^2

        Args:
            obs: (B, ds) states; ``target`` must already be the Boltzmann target of these states
                (its q maps draws (B, K, d) -> (B, K)).
            u1: (B, d) latent endpoints that place u_t (e.g. the policy's own samples); detached.
            target: :class:`~rfm_teach.targets.Boltzmann`, squashed iff the policy is.
            temperature: the lambda the network is conditioned on; a float must equal ``target.temperature``.
            K, cv, generator: passed to :func:`~rfm_teach.estimators.posterior_mean`.
            exact_mu1: optional exact posterior mean replacing the estimate (see :meth:`regression_target`).
            prior_samples: (B, M, d) latent draws of the policy per row, or None (the paper's
                kernel-only estimator); passed to :func:`~rfm_teach.estimators.posterior_mean`.
            mixture: shares (kernel, joint fit, marginal fit) of the proposal when ``prior_samples`` are given.
            adaptive: the kernel's share per row rises to its predicted efficiency (see :func:`~rfm_teach.estimators.draw`).
            check: False makes the whole path free of host reads (no ``bool(tensor)``, ``.item()``,
                ``float(tensor)``): value checks are skipped and the info values stay 0-dim tensors.

        Returns:
            (scalar loss, info) with info = {"loss": the loss, "ess": mean ESS, "c": mean |c|, "target_rms":
            rms of y}, each per seed: tensors (S,) with ``check=False``; with ``check=True`` floats (lists for
            S > 1). ess and c are None with ``exact_mu1``. With S seeds (:mod:`rfm_teach.seeds`) the loss is
            the sum over seeds of each seed's mean, so seed s's gradient is that of its own loss.
        """
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and isinstance(target, Boltzmann):
            if not math.isclose(float(temperature), target.temperature, rel_tol=1e-6):
                raise ValueError(
                    f"temperature={temperature} conditions the network but the target was built with "
                    f"temperature={target.temperature}; they must agree"
                )
        obs = self._check_obs(obs)
        temp = self._check_temperature(temperature, obs.shape[0], check)
        if isinstance(u1, Tensor) and u1.shape[:1] != obs.shape[:1]:
            raise ValueError(f"u1 must have one row per state: obs has {obs.shape[0]}, u1 has shape {tuple(u1.shape)}")
        t, u_t, y, est = self.regression_target(u1, target, K=K, cv=cv, generator=generator, exact_mu1=exact_mu1,
                                                prior_samples=prior_samples, mixture=mixture, adaptive=adaptive,
                                                check=check)
        S = self.n_seeds  # a mean per seed, summed: seed s's gradient is that of its own loss
        per_seed = seeds.seed_mean((self._net(obs, u_t, t, temp) - y) ** 2, S)
        loss = per_seed.sum()
        info = {  # per seed, (S,)
            "loss": per_seed.detach(),
            "ess": None if est is None else seeds.seed_mean(est.ess, S),
            "c": None if est is None else seeds.seed_mean(est.c.abs(), S),
            "target_rms": seeds.seed_mean(y.pow(2), S).sqrt(),
        }
        if check:  # host reads are allowed here: the caller asked for validated, plain floats
            info = {k: None if v is None else (float(v) if S == 1 else v.tolist()) for k, v in info.items()}
        return loss, info

    # ---- sampling ---------------------------------------------------------------------------------
    def _prepare_sampling(self, obs: Tensor, n: int, temperature: float | Tensor, steps: int, solver: str,
                          generator: Generator) -> tuple[Tensor, Tensor, Tensor]:
        if solver not in self.solvers:
            raise ValueError(f"unknown solver {solver!r}; expected one of {self.solvers}")
        for name, value in (("n", n), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        obs = self._check_obs(obs)
        batch = obs.shape[0]
        obs_rep = obs.repeat_interleave(n, 0)  # (B n, ds): row b*n + j is sample j of state b
        temp = self._check_temperature(temperature, batch)
        if temp.shape[0] not in (1, self.n_seeds):  # one per row: one per particle
            temp = temp.repeat_interleave(n, 0)
        u = seeds.randn((batch * n, self.act_dim), generator, dtype=self._dtype, device=self._device)
        return obs_rep, temp, u

    def field(self, obs: Tensor, temperature: Tensor, kind: str = "velocity") -> Field:
        """The learned field as a sampler callable (u, t) -> (N, d): the velocity du/dt, or the raw network output.

        ``obs`` (N, ds) and ``temperature`` (N,) or (1,) are fixed for the whole solve; the embedding of
        t is computed once per call (one row, broadcast), not once per row.
        """
        if kind not in ("velocity", "raw"):
            raise ValueError(f"kind must be 'velocity' or 'raw'; got {kind!r}")
        n_in = self.net.obs_dim + self.net.act_dim
        e = self.net.emb_dim
        temp_part = self.net.inp.part(sinusoidal_embedding(torch.log(temperature), e), slice(n_in + e, None))

        def fn(u: Tensor, t: float) -> Tensor:
            tt = torch.full((1,), float(t), dtype=u.dtype, device=u.device)
            emb = self.net.inp.part(sinusoidal_embedding(self.net.time_scale * tt, e), slice(n_in, n_in + e))
            out = self._net(obs, u, tt, temperature, embedded=emb + temp_part)
            if kind == "raw":
                return out
            return self.path.convert(out, u, tt[:, None], src=self.prediction, dst="velocity")

        return fn

    def _ode(self, obs: Tensor, u: Tensor, temp: Tensor, steps: int, solver: str) -> Tensor:
        """Integrate du/dt = v(t, u) from t_min to 1 - t_min with :func:`euler` or :func:`heun`."""
        integrator = euler if solver == "euler" else heun
        return integrator(self.field(obs, temp), u, time_grid(self.t_min, steps))

    def act(self, obs: Tensor, n: int = 1, **kwargs) -> Tensor:
        """Actions (B, n, d): tanh of the latent samples if ``squash`` else the latents themselves."""
        u = self.sample(obs, n, **kwargs)
        return torch.tanh(u) if self.squash else u


class FlowPolicy(_PathPolicy):
    """A flow policy on the straight path u_t = t u1 + (1 - t) u0: the network is the velocity v_theta.

    Sampling integrates du/dt = v_theta(t, u, s, lambda) from u ~ N(0, I) at t_min to 1 - t_min with
    ``steps`` Euler (the authors' default, 10 steps) or Heun steps (the free functions :func:`euler`
    and :func:`heun`). Both ends are inset by t_min = 0.01 as in the authors' code: the target velocity
    (mu1 - u_t)/(1 - t) blows up at t = 1, and the proposal std (1 - t)/t of the estimator blows up at t = 0.

    Shapes: ``sample`` returns latent endpoints (B, n, d); actions are tanh(u) when ``squash``.
    """

    solvers = ("euler", "heun")
    prediction = "velocity"

    def __init__(self, obs_dim: int, act_dim: int, *, hidden: int = 256, n_blocks: int = 2, emb_dim: int = 128,
                 t_min: float = 0.01, squash: bool = True, time_scale: float = DEFAULT_TIME_SCALE) -> None:
        super().__init__(obs_dim, act_dim, hidden=hidden, n_blocks=n_blocks, emb_dim=emb_dim, t_min=t_min,
                         squash=squash, time_scale=time_scale)
        self.path = LinearFlow()

    @torch.no_grad()
    def sample(self, obs: Tensor, n: int = 1, *, temperature: float | Tensor, steps: int = 10, solver: str = "euler",
               generator: Generator = None) -> Tensor:
        """Latent samples u of shape (B, n, d): ``steps`` ODE steps of the learned velocity from N(0, I)."""
        obs_rep, temp, u = self._prepare_sampling(obs, n, temperature, steps, solver, generator)
        u = self._ode(obs_rep, u, temp, steps, solver)
        return u.reshape(obs.shape[0], n, self.act_dim)


class DiffusionPolicy(_PathPolicy):
    """A diffusion policy on the VP path (t = 1 is data): the network predicts the noise eps = E[u0 | u_t].

    Training is the same RFM regression as :class:`FlowPolicy` with the target eps* = mu0_hat =
    (u_t - alpha_t mu1_hat) / beta_t (``to_target("x0")``).

    Preconditioning (:meth:`precondition`): the prediction is eps_hat = beta_t u_t - alpha_t F(s, u_t, t,
    lambda), F the network. beta_t u_t is the exact E[u0 | u_t] when u1 ~ N(0, I), so F only learns how
    the target differs from a standard normal, and, written as a posterior mean, mu1_hat = alpha_t u_t +
    beta_t F stays bounded whatever F is (the c_skip / c_out form of Karras et al., EDM, 2022). Without
    it an untrained network's O(1) noise prediction becomes mu1_hat = (u - beta eps)/alpha with
    1/alpha(t_min) ≈ 137: the untrained sampler puts the policy's samples about 100 units from the origin
    (notebooks/06_fixed_target.ipynb, section 1), and the first RFM updates then regress at points where
    every estimator is far off. The minimiser is unchanged: F is any function of (s, u_t, t, lambda).

    Sampling is deterministic (no injected noise). The default ``solver="euler"`` (and ``"heun"``)
    integrates the probability-flow ODE written as a velocity, du/dt = d_alpha mu1 + d_beta mu0, from
    t_min to 1 - t_min like the flow policy. ``solver="ddim"`` (:func:`ddim`) calls the network
    ``steps`` times, at t_min = t_0 < t_1 < ... < t_{S-1} = 1 - t_min (equally spaced), each time
    stepping to the next grid time and from t_{S-1} to t = 1::

        u1_hat = (u - beta_t eps) / alpha_t,     u <- alpha_t' u1_hat + beta_t' eps

    DDIM is exact for the probability-flow ODE when eps is constant over a step. Its last step lands
    on t = 1 (alpha = 1, beta = 0), i.e. it returns the denoised u1_hat = E[u1 | u_{1 - t_min}]:
    stopping at 1 - t_min would keep VP noise of std beta ≈ 0.045, a visible blur on the toys (the
    denoising shrinks the spread by about as much, but only along directions narrower than 0.045).

    Why Euler is the default: DDIM contracts. For a Gaussian target each DDIM step multiplies the
    spread by the cosine of the angle between (alpha_t s, beta_t) and (alpha_t' s, beta_t') (Cauchy-
    Schwarz), so few coarse steps shrink it: with the exact eps of the quadratic toy and 30 equally
    spaced steps DDIM kept 85-92% of the target's std, Euler 97-100% and Heun 100-103%
    (tests/test_policies.py checks all three).
    """

    solvers = ("ddim", "euler", "heun")
    prediction = "x0"

    def __init__(self, obs_dim: int, act_dim: int, *, hidden: int = 256, n_blocks: int = 2, emb_dim: int = 128,
                 t_min: float = 0.01, squash: bool = True, path: VPDiffusion | None = None,
                 time_scale: float = DEFAULT_TIME_SCALE) -> None:
        super().__init__(obs_dim, act_dim, hidden=hidden, n_blocks=n_blocks, emb_dim=emb_dim, t_min=t_min,
                         squash=squash, time_scale=time_scale)
        if path is not None and not isinstance(path, VPDiffusion):
            raise TypeError(f"path must be a rfm_teach.paths.VPDiffusion; got {type(path).__name__}")
        self.path = VPDiffusion() if path is None else path

    def precondition(self, out: Tensor, u_t: Tensor, t: Tensor) -> Tensor:
        """eps_hat = beta_t u_t - alpha_t F, where F is the network output. Shapes (B, d); t (B,) or (1,)."""
        t = t[:, None]
        return self.path.beta(t) * u_t - self.path.alpha(t) * out

    @torch.no_grad()
    def sample(self, obs: Tensor, n: int = 1, *, temperature: float | Tensor, steps: int = 10, solver: str = "euler",
               generator: Generator = None) -> Tensor:
        """Latent samples u of shape (B, n, d) from N(0, I) by ``steps`` deterministic steps."""
        obs_rep, temp, u = self._prepare_sampling(obs, n, temperature, steps, solver, generator)
        if solver == "ddim":
            # steps network calls at t_min = t_0 < ... < t_{S-1} = 1 - t_min; the last one jumps to t = 1.
            times = time_grid(self.t_min, steps - 1, end=1.0) if steps > 1 else [self.t_min, 1.0]
            u = ddim(self.field(obs_rep, temp, kind="raw"), u, times, self.path)
        else:
            u = self._ode(obs_rep, u, temp, steps, solver)
        return u.reshape(obs.shape[0], n, self.act_dim)
