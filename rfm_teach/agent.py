"""The off-policy actor-critic of the RFM paper's code (azizanlab/ReverseFlowMatching), with QSM and SAC in the same harness.

One update of the flow-family agent (``algo`` "rfm" or "qsm")::

    u_m = ACT_latent(s, M particles)                             # M = particles, drawn once per update
    u1  = Boltzmann pick among u_m with the pre-update critic     # endpoints="boltzmann" (the authors')
          (or u_1 itself, one raw policy sample: endpoints="raw")
    a'  = ACT(s', M particles, "boltzmann")                      # particle choice with the ONLINE critics
          (the particles at s and s' come from one ODE solve over both, and are picked in one critic call)
    y   = r + gamma * mask * min_i Qtarg_i(s', a')                # no entropy term (as the authors)
    critic: minimise sum_i mean (Q_i(s, a) - y)^2                 # Adam 1e-3, global-norm clip 10
    actor:  policy.loss(s, u1, Boltzmann(min_i Q_i(s, .), lambda, squash=True), K, cv,
                        prior_samples = u_m if proposal == "policy" else None)   # Adam 3e-4, clip 10
    Polyak: theta_targ <- tau theta + (1 - tau) theta_targ

The regression target is chosen by two fields, recorded in every manifest as they are:

- ``cv``: the estimator family of :func:`rfm_teach.estimators.posterior_mean`: "none"
  (noise-expectation, SDAC/QNE-style), "gradient" (gradient-expectation, iDEM/DQS-style), "plugin"
  (the paper's per-dimension coefficient), "auto" (ours, the default) or a fixed float.
- ``proposal``: "policy" (the default; our addition) passes the M particles drawn for the Boltzmann
  choice as ``prior_samples``, a defensive mixture of the reverse kernel and two densities fitted to
  the policy's own samples (joint and marginal), whose weights do not collapse at small t; "kernel" is the paper's
  reverse-kernel-only proposal. The paper's estimator is ``cv="plugin", proposal="kernel"``.

``algo="qsm"`` regresses onto the QSM target (:func:`rfm_teach.estimators.qsm_mean`: grad Q at the
noisy action itself, no posterior averaging; Psenka et al.), with the same particles, critics and
schedule; ``cv`` and ``proposal`` are unused there.

The endpoint u1 only places u_t (any full-support distribution of u_t has the same minimiser), so
``endpoints="raw"`` (one policy sample, no critic call) has the same fixed point as the authors'
Boltzmann pick; ``benchmarks/bandit.py`` measures whether it changes what is learned.

ACT(s, M, mode) draws M latent particles u from the policy (``steps`` Euler steps), squashes a = tanh u
and picks one: "boltzmann" samples an index from softmax(min_i Q_i(s, a_m) / lambda) (behaviour and
critic targets), "argmax" takes the best by Q (best-of-N evaluation, the authors' protocol), "raw"
takes the policy's own sample (M = 1: what the learned distribution itself is worth). We report both
evaluations.

``algo="sac"`` swaps the actor for a Gaussian-tanh policy with automatic entropy tuning (Haarnoja et al.
2018; target entropy -d) and the standard entropy-regularised backup. Critics, replay, update schedule
and evaluation protocol are shared; the critic targets differ (SAC's backup has an entropy term, the flow
family's none), so wherever the backup bootstraps, differences come from actor and critic target together. SAC's evaluations:
"argmax" is the deterministic tanh(mean) action (what published SAC numbers report), "raw" one sample
tanh(u), u ~ N(mean, std^2).

``exact_q="bandit"`` replaces the learned critics, wherever they are read (particle choice, the actor's
target, SAC's actor loss), by the contextual bandit's exact Q(c, a) = r(c, a)
(:class:`rfm_teach.envs.BanditQ`; one-step episodes make the reward the Q-value), and stops training the
critics: it tells the critic's error apart from the estimator's and the actor's. ``exact_target=True``
on top replaces the estimate too, by the exact posterior mean (:class:`rfm_teach.envs.BanditPosterior`),
so that what remains is the fit's own error.

Temperature. The authors fix lambda = 0.02 for DeepMind Control, whose per-step rewards lie in [0, 1],
and have no automatic mode. Rewards elsewhere have other scales (MuJoCo HalfCheetah pays up to ~10 per
step), and exp(Q / lambda) is only meaningful relative to the scale of Q. ``temperature_mode=
"reward_scale"`` sets lambda = temperature * std(r) with std(r) the standard deviation of the rewards
collected during the random warm-up, frozen afterwards. Multiplying all rewards by k then multiplies
lambda by k and leaves the target policy unchanged, and a frozen lambda keeps the actor's target
stationary. This is our choice, not the authors'; it is untested at scale.

Seeds. ``Agent(..., seed=[s0, s1, ...])`` is S independent agents in one set of networks (stacked
weights, one generator per seed, per-seed losses and clipping; :mod:`rfm_teach.seeds`): each seed starts
from the weights an agent built with that seed alone has, and draws the same random numbers.

Host reads. :meth:`Agent.update` validates nothing on the device (the estimator, the target and the
policy are called with ``check=False``; inputs are the loop's own buffer). It reads the device once
for control flow (whether any transition of the batch bootstraps: a one-step bandit skips the ODE
solve at s') and, with ``sync=True`` (the default), once more to return its metrics as floats;
``sync=False`` returns 0-dim tensors instead, for a loop that converts them when it logs.

Derived in notebooks/07_online_bandit.ipynb.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from . import seeds
from .estimators import CV_MODES, MIXTURE, check_mixture, qsm_mean
from .policies import DEFAULT_TIME_SCALE, DiffusionPolicy, FlowPolicy
from .seeds import Generator, SeedGenerators, SeedLinear, clip_grad_norm_per_seed, stack_seeds
from .targets import Boltzmann, log_sech2

__all__ = ["ALGOS", "EXACT_Q", "PROPOSALS", "ENDPOINTS", "BEHAVIOURS", "Agent", "AgentConfig", "GaussianTanhPolicy", "TwinCritic"]

ALGOS: tuple[str, ...] = ("rfm", "qsm", "sac")
PROPOSALS: tuple[str, ...] = ("policy", "kernel")
ENDPOINTS: tuple[str, ...] = ("boltzmann", "raw")
#: How the flow family collects data (``AgentConfig.behaviour``); SAC always acts with a sample.
BEHAVIOURS: tuple[str, ...] = ("boltzmann", "raw")
#: Names accepted by ``AgentConfig.exact_q``: exact action values that replace the learned critics.
EXACT_Q: tuple[str, ...] = ("bandit",)
ACT_MODES: tuple[str, ...] = ("boltzmann", "argmax", "raw")
#: Algorithm names that existed before ``cv`` became a field, and what to write instead.
_REMOVED_ALGOS = {"noise": "algo='rfm', cv='none'", "gradient": "algo='rfm', cv='gradient'"}


@dataclass
class AgentConfig:
    """Hyperparameters of the agent; defaults are the authors' (configs/default.yaml and rfm.yaml of
    azizanlab/ReverseFlowMatching), except ``cv`` and ``proposal`` (ours; see the module docstring).

    Attributes:
        algo: "rfm" (flow/diffusion actor regressed onto a posterior-mean estimate; ``cv`` picks the
            family), "qsm" (Q-score matching target, no posterior averaging) or "sac".
        cv: estimator of E[u1 | u_t]: "none" (noise-expectation), "gradient" (gradient-expectation),
            "plugin" (the paper's coefficient), "auto" (ours, default) or a fixed float.
        proposal: "policy" (defensive mixture with the M particles of the Boltzmann choice, default)
            or "kernel" (the paper's reverse-kernel proposal). The paper's estimator: cv="plugin", proposal="kernel".
        mixture: shares of the K draws from the kernel, the joint fit and the marginal fit of the particles
            with proposal="policy" (1/4, 1/4, 1/2; :func:`rfm_teach.estimators.draw`). (0.5, 0.5, 0) is
            the joint-only mixture of earlier versions.
        adaptive_share: raise the kernel's share per row to its predicted efficiency (default, ours;
            :func:`rfm_teach.estimators.draw`); False keeps ``mixture`` in every row, as runs made before
            this field existed did.
        endpoints: where u_t is placed: "boltzmann" (the authors': a Boltzmann pick among the M
            particles) or "raw" (one policy sample; same fixed point, no critic call).
        behaviour: how the flow family acts while collecting data: "boltzmann" (the authors': a
            Boltzmann pick among the M particles) or "raw" (one policy sample, as SAC acts; a
            diagnostic of what data the critics learn from). SAC ignores it.
        exact_q: None (learned twin critics) or "bandit" (the contextual bandit's exact Q = r; critics unused).
        exact_target: regress onto the exact posterior mean E[u1 | u_t] instead of an estimate (needs
            algo="rfm", exact_q="bandit" and temperature_mode="fixed"; :class:`rfm_teach.envs.BanditPosterior`):
            what a perfect estimator would give, so the remaining error is the fit's.
        policy: "flow" (the paper) or "diffusion" (same RFM target, VP path, noise prediction).
        hidden, n_blocks, emb_dim: actor width, residual blocks, embedding size (256, 2, 128).
        critic_hidden: width of the two hidden ReLU layers of each critic (256).
        K: importance draws per posterior estimate (100).
        particles: policy samples M per state for action choice (32).
        steps: ODE steps of the sampler (10 Euler steps on [t_min, 1 - t_min]).
        t_min: time inset at both ends, for training and sampling (0.01).
        time_scale: the actor embeds sinusoid(time_scale * t) (1000, ours; the authors embed t itself,
            time_scale=1: see :class:`rfm_teach.policies.PolicyNet` for what each measured).
        temperature: lambda (0.02, tuned by the authors for rewards in [0, 1]).
        temperature_mode: "fixed" (lambda = temperature) or "reward_scale" (lambda = temperature *
            std of warm-up rewards; see the module docstring).
        gamma, tau: discount 0.99 and Polyak rate 0.005 (target update every step).
        actor_lr, critic_lr: Adam learning rates 3e-4 and 1e-3.
        grad_clip: global gradient-norm clip for actor and critic (10, the authors' rfm.yaml); None = off.
        sac_alpha_lr: Adam learning rate of SAC's log-alpha (1e-3, CleanRL's choice).
    """

    algo: str = "rfm"
    cv: float | str = "auto"
    proposal: str = "policy"
    mixture: tuple[float, float, float] = MIXTURE
    adaptive_share: bool = True
    endpoints: str = "boltzmann"
    behaviour: str = "boltzmann"
    exact_q: str | None = None
    exact_target: bool = False
    policy: str = "flow"
    hidden: int = 256
    n_blocks: int = 2
    emb_dim: int = 128
    critic_hidden: int = 256
    K: int = 100
    particles: int = 32
    steps: int = 10
    t_min: float = 0.01
    time_scale: float = DEFAULT_TIME_SCALE
    temperature: float = 0.02
    temperature_mode: str = "fixed"
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    grad_clip: float | None = 10.0
    sac_alpha_lr: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.mixture, list):  # read back from JSON
            self.mixture = tuple(self.mixture)

    def validate(self) -> AgentConfig:
        """Raise ValueError naming the first bad value; return self so calls can be chained."""
        if self.algo in _REMOVED_ALGOS:
            raise ValueError(f"algo {self.algo!r} is now a choice of estimator: use {_REMOVED_ALGOS[self.algo]}")
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}; got {self.algo!r}")
        if isinstance(self.cv, str):
            if self.cv not in CV_MODES:
                raise ValueError(f"cv must be one of {CV_MODES} or a float; got {self.cv!r}")
        elif isinstance(self.cv, bool) or not isinstance(self.cv, (int, float)) or not math.isfinite(float(self.cv)):
            raise ValueError(f"cv must be one of {CV_MODES} or a finite float; got {self.cv!r}")
        for name, value, allowed in (("proposal", self.proposal, PROPOSALS), ("endpoints", self.endpoints, ENDPOINTS),
                                     ("behaviour", self.behaviour, BEHAVIOURS),
                                     ("policy", self.policy, ("flow", "diffusion")),
                                     ("temperature_mode", self.temperature_mode, ("fixed", "reward_scale"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
        check_mixture(self.mixture)
        if self.exact_q is not None and self.exact_q not in EXACT_Q:
            raise ValueError(f"exact_q must be None or one of {EXACT_Q}; got {self.exact_q!r}")
        for name in ("exact_target", "adaptive_share"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.exact_target and (self.algo != "rfm" or self.exact_q != "bandit" or self.temperature_mode != "fixed"):
            raise ValueError("exact_target=True needs algo='rfm', exact_q='bandit' and temperature_mode='fixed' (the "
                             f"exact posterior is known for the bandit's true Q at a fixed lambda); got algo={self.algo!r}, "
                             f"exact_q={self.exact_q!r}, temperature_mode={self.temperature_mode!r}")
        for name in ("hidden", "critic_hidden", "K", "particles", "steps", "emb_dim"):
            _check_int(name, getattr(self, name), 1)
        _check_int("n_blocks", self.n_blocks, 0)
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even; got {self.emb_dim}")
        _check_float("t_min", self.t_min, 0.0, 0.5, open_low=True, open_high=True)
        _check_float("gamma", self.gamma, 0.0, 1.0, open_high=True)
        _check_float("tau", self.tau, 0.0, 1.0, open_low=True)
        for name in ("temperature", "time_scale", "actor_lr", "critic_lr", "sac_alpha_lr"):
            _check_float(name, getattr(self, name), 0.0, math.inf, open_low=True, open_high=True)
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, 0.0, math.inf, open_low=True, open_high=True)
        return self


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")


def _check_float(name: str, value: object, low: float, high: float, *, open_low: bool = False,
                 open_high: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {high}{hi}; got {value!r}")


class TwinCritic(nn.Module):
    """Two independent Q networks, each [s, a] -> 256 ReLU -> 256 ReLU -> 1 (the authors' critic).

    Shapes: ``obs`` (..., ds), ``act`` (..., d) with the same leading shape -> ``forward`` (2, ...).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(SeedLinear(obs_dim + act_dim, hidden), nn.ReLU(), SeedLinear(hidden, hidden), nn.ReLU(),
                          SeedLinear(hidden, 1))
            for _ in range(2)
        )

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        x = torch.cat([obs, act], -1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])

    def q_min(self, obs: Tensor, act: Tensor) -> Tensor:
        """min_i Q_i(s, a), the pessimistic value used for targets, particle choice and the actor. (...)."""
        return self(obs, act).min(0).values


class GaussianTanhPolicy(nn.Module):
    """SAC's actor: u ~ N(mu(s), sigma(s)^2), a = tanh(u); 2 x 256 ReLU, log sigma clamped to [-5, 2].

    log pi(a | s) = log N(u; mu, sigma^2) - sum_j log sech^2(u_j)   (change of variables through tanh)

    ``sample`` has the flow policy's signature (``temperature`` and ``steps`` are accepted and unused)
    so that the agent picks particles the same way for every algorithm.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.body = nn.Sequential(SeedLinear(obs_dim, hidden), nn.ReLU(), SeedLinear(hidden, hidden), nn.ReLU())
        self.head = SeedLinear(hidden, 2 * act_dim)

    def _dist(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.head(self.body(obs)).chunk(2, -1)
        return mean, log_std.clamp(-5.0, 2.0)

    def rsample(self, obs: Tensor, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """Reparameterised latent u (B, d) and log pi(tanh u | s) (B,)."""
        mean, log_std = self._dist(obs)
        eps = seeds.randn(mean.shape, generator, dtype=mean.dtype, device=mean.device)
        u = mean + log_std.exp() * eps
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1) - log_sech2(u).sum(-1)
        return u, log_prob

    @torch.no_grad()
    def sample(self, obs: Tensor, n: int = 1, *, temperature: float | None = None, steps: int | None = None,
               generator: Generator = None) -> Tensor:
        """Latent samples (B, n, d)."""
        mean, log_std = self._dist(obs)
        eps = seeds.randn((obs.shape[0], n, self.act_dim), generator, dtype=mean.dtype, device=mean.device)
        return mean[:, None] + log_std.exp()[:, None] * eps


def _make_exact_q(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "bandit":
        from .envs import BanditQ  # beside the spine: imported only when asked for

        return BanditQ()
    raise ValueError(f"exact_q must be None or one of {EXACT_Q}; got {name!r}")


class Agent:
    """Twin critics with target copies, a flow/diffusion (or SAC) actor, particle action choice, updates.

    Args:
        obs_dim, act_dim: sizes of the flat observation and of the action box [-1, 1]^d.
        config: :class:`AgentConfig` (validated here).
        device: torch device for networks and the agent's generator.
        seed: an int, or a sequence of S distinct ints: S independent agents batched in one set of
            networks (:mod:`rfm_teach.seeds`). Seed s initialises its networks (inside
            ``torch.random.fork_rng``: torch's global RNG is left as it was) exactly as an agent built
            with that seed alone, and seeds its own ``torch.Generator``, the only source of randomness
            of seed s in :meth:`act` and :meth:`update` (so a run is reproducible and resumable).

    Shapes. With an int seed: ``act`` takes obs (B, ds) -> (B, d) and ``update`` a batch of (B, .)
    tensors. With a sequence of S seeds every public tensor gains a leading seed axis: obs (S, B, ds)
    -> (S, B, d), batches (S, B, .), and metrics are per seed. Inside, the seed is folded into the
    rows, seed-major (``choose`` and the networks take (S B, .) rows).
    """

    def __init__(self, obs_dim: int, act_dim: int, config: AgentConfig, *, device: str | torch.device = "cpu",
                 seed: int | Sequence[int] = 0) -> None:
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig; got {type(config).__name__}")
        config.validate()
        _check_int("obs_dim", obs_dim, 1)
        _check_int("act_dim", act_dim, 1)
        self.batched = not isinstance(seed, int)
        self.seeds = [seed] if not self.batched else list(seed)
        if not self.seeds:
            raise ValueError("seed must be an int or a non-empty sequence of ints; got an empty sequence")
        for s in self.seeds:
            _check_int("seed", s, 0)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct; got {self.seeds}")
        self.n_seeds = S = len(self.seeds)
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.device = torch.device(device)
        cfg = config
        critics, actors = [], []
        for s in self.seeds:
            with torch.random.fork_rng(devices=[]):  # networks are initialised on the CPU, then moved
                torch.manual_seed(s)
                critics.append(TwinCritic(obs_dim, act_dim, cfg.critic_hidden))
                if cfg.algo == "sac":
                    actors.append(GaussianTanhPolicy(obs_dim, act_dim, cfg.hidden))
                else:
                    policy_cls = FlowPolicy if cfg.policy == "flow" else DiffusionPolicy
                    actors.append(policy_cls(obs_dim, act_dim, hidden=cfg.hidden, n_blocks=cfg.n_blocks,
                                             emb_dim=cfg.emb_dim, t_min=cfg.t_min, squash=True, time_scale=cfg.time_scale))
        self.critic = stack_seeds(critics).to(self.device)
        self.actor: nn.Module = stack_seeds(actors).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        if cfg.algo == "sac":
            self.log_alpha = torch.zeros(S, device=self.device, requires_grad=True)
            self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=cfg.sac_alpha_lr)
            self.target_entropy = -float(act_dim)
        self.exact_q = None if cfg.exact_q is None else _make_exact_q(cfg.exact_q)
        if cfg.exact_target:
            from .envs import BanditPosterior  # beside the spine, like BanditQ

            self.exact_posterior = BanditPosterior(cfg.temperature)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        if self.batched:
            self.generator: torch.Generator | SeedGenerators = SeedGenerators(self.seeds, self.device)
        else:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(self.seeds[0])
        self.temperatures = [float(cfg.temperature)] * S

    # ---- temperature ------------------------------------------------------------------------------
    @property
    def temperature(self) -> float | list[float]:
        """lambda: a float for one seed, one per seed for a batch."""
        return self.temperatures if self.batched else self.temperatures[0]

    @property
    def temperatures(self) -> list[float]:
        """lambda per seed, (S,) floats."""
        return self._temperatures

    @temperatures.setter
    def temperatures(self, values: list[float]) -> None:
        self._temperatures = [float(v) for v in values]
        self._temperature_tensor = torch.tensor(self._temperatures, device=self.device)  # once here, not per update

    def _seed_temperature(self) -> float | Tensor:
        """lambda as the actor is conditioned on it: a float with ``temperature_mode="fixed"`` (every seed
        shares it), else (S,), one per seed.

        The form depends on the mode only, never on the values, so that a seed computes the same
        floating-point operations alone and in a batch (:mod:`rfm_teach.seeds`).
        """
        return self._temperatures[0] if self.config.temperature_mode == "fixed" else self._temperature_tensor

    def _row_temperature(self, rows: int, dims: int = 1) -> float | Tensor:
        """lambda for ``rows`` seed-major rows: a float (mode "fixed"), else (rows,) (or (rows, 1) for dims=2)."""
        if self.config.temperature_mode == "fixed":
            return self._temperatures[0]
        per_row = self._temperature_tensor.repeat_interleave(rows // self.n_seeds)
        return per_row if dims == 1 else per_row[:, None]

    def calibrate_temperature(self, rewards: Tensor) -> float | list[float]:
        """For ``temperature_mode="reward_scale"``: set lambda = temperature * std(rewards) once; return it.

        ``rewards``: (n,) for one seed, (S, n) for a batch (each seed calibrates on its own warm-up).
        With "fixed" this is a no-op that returns the fixed lambda. The std is floored at 1e-3 so a
        warm-up with constant rewards cannot give lambda = 0.
        """
        if self.config.temperature_mode == "reward_scale":
            rows = rewards.reshape(self.n_seeds, -1).float()
            self.temperatures = [self.config.temperature * (max(float(r.std()), 1e-3) if r.numel() > 1 else 1.0)
                                 for r in rows]
        return self.temperature

    # ---- values -----------------------------------------------------------------------------------
    def q_value(self, obs: Tensor, act: Tensor) -> Tensor:
        """The Q the agent acts on: min_i Q_i(s, a) of the online critics, or the exact Q with ``exact_q``. (...)."""
        if self.exact_q is not None:
            return self.exact_q(obs, act)
        return self.critic.q_min(obs, act)

    # ---- acting -----------------------------------------------------------------------------------
    def _latents(self, obs: Tensor, n: int, generator: Generator) -> Tensor:
        return self.actor.sample(obs, n, temperature=self._seed_temperature(), steps=self.config.steps,
                                 generator=generator)

    def _pick(self, obs: Tensor, u: Tensor, mode: str, generator: Generator) -> Tensor:
        """One of the particles u (B, M, d) per state: Boltzmann sampling or argmax of Q. (B, d)."""
        q = self.q_value(obs[:, None, :].expand(-1, u.shape[1], -1), torch.tanh(u))  # (B, M)
        if mode == "argmax":
            idx = q.argmax(-1)
        else:
            idx = seeds.multinomial(torch.softmax(q / self._row_temperature(q.shape[0], 2), -1), 1, generator)[:, 0]
        return u[torch.arange(u.shape[0], device=u.device), idx]

    @torch.no_grad()
    def choose(self, obs: Tensor, mode: str, generator: Generator = None) -> Tensor:
        """Pick one latent action per state by ``mode`` ("boltzmann", "argmax" or "raw"). (B, d).

        ``obs``: (B, ds) rows, seed-major for a batch of seeds; ``generator`` as ``self.generator``.
        Flow family: "boltzmann" and "argmax" draw ``particles`` latents u_m, score them with
        min_i Q_i(s, tanh u_m) and pick by softmax(Q / lambda) sampling or by the largest Q; "raw"
        returns one policy sample. SAC: "argmax" is the deterministic mean latent (tanh of it is the
        action published SAC numbers evaluate), "raw" one Gaussian sample, "boltzmann" as above.
        """
        if mode not in ACT_MODES:
            raise ValueError(f"mode must be one of {ACT_MODES}; got {mode!r}")
        gen = self.generator if generator is None else generator
        if mode == "raw":
            return self._latents(obs, 1, gen)[:, 0]
        if mode == "argmax" and self.config.algo == "sac":
            return self.actor._dist(obs)[0]
        return self._pick(obs, self._latents(obs, self.config.particles, gen), mode, gen)

    @torch.no_grad()
    def act(self, obs: Tensor, mode: str = "boltzmann", generator: Generator = None) -> Tensor:
        """Actions in [-1, 1]^d: obs (B, ds) -> (B, d), or (S, B, ds) -> (S, B, d) for a batch of seeds.

        SAC behaves with "raw". ``generator``: default the agent's own; for a batch of seeds a
        :class:`~rfm_teach.seeds.SeedGenerators` with one generator per seed.
        """
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        want = (self.n_seeds, "B", self.obs_dim) if self.batched else ("B", self.obs_dim)
        if obs.dim() != len(want) or obs.shape[-1] != self.obs_dim or (self.batched and obs.shape[0] != self.n_seeds):
            raise ValueError(f"obs must have shape {want}; got {tuple(obs.shape)}")
        if self.batched and not (isinstance(generator, SeedGenerators) and len(generator) == self.n_seeds or generator is None):
            raise ValueError(f"generator must be None or a SeedGenerators with {self.n_seeds} generators for this batch of seeds")
        return torch.tanh(self.choose(obs.reshape(-1, self.obs_dim), mode, generator)).reshape(*obs.shape[:-1], self.act_dim)

    @property
    def behaviour_mode(self) -> str:
        """How training data is collected: ``config.behaviour`` for the flow family (Boltzmann resampling by
        default), a plain sample for SAC."""
        return "raw" if self.config.algo == "sac" else self.config.behaviour

    # ---- updates ----------------------------------------------------------------------------------
    def _step(self, optim: torch.optim.Optimizer, loss: Tensor, params) -> None:
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            clip_grad_norm_per_seed(params, self.config.grad_clip, self.n_seeds)
        optim.step()

    def _critic_update(self, batch: dict[str, Tensor], next_value: Tensor | None) -> Tensor:
        """One critic step towards r + gamma mask V(s'); per-seed losses (S,) (NaN with ``exact_q``: no step)."""
        if self.exact_q is not None:
            return torch.full((self.n_seeds,), math.nan, device=self.device)
        y = batch["reward"] if next_value is None else batch["reward"] + self.config.gamma * batch["mask"] * next_value
        q = self.critic(batch["obs"], batch["action"])  # (2, B)
        loss = ((q - y) ** 2).reshape(2, self.n_seeds, -1).mean(-1).sum(0)  # (S,): each seed's own loss
        self._step(self.critic_optim, loss.sum(), list(self.critic.parameters()))
        return loss.detach()

    @torch.no_grad()
    def _polyak(self) -> None:
        if self.exact_q is not None:
            return
        tau = self.config.tau
        for p, p_targ in zip(self.critic.parameters(), self.critic_target.parameters()):
            p_targ.lerp_(p, tau)

    def update(self, batch: dict[str, Tensor], *, sync: bool = True) -> dict[str, float | list[float] | Tensor]:
        """One fused update on a batch {obs, action, reward, next_obs, mask} (all float32). Returns metrics.

        Shapes: (B, .) for one seed, (S, B, .) for a batch of seeds. ``mask`` is 0 only on true
        termination (not on time-limit truncation), so the backup keeps bootstrapping through time
        limits. Metrics: critic_loss, actor_loss, temperature, and ess and c (flow family; NaN where
        undefined, e.g. for QSM) or alpha and entropy (SAC). With ``sync=True`` they are floats (lists of
        S floats for a batch of seeds), read from the device in one transfer after the step; with
        ``sync=False`` tensors of shape () or (S,) (temperature stays as :attr:`temperature`), so a loop
        can average them on the device and read once.
        """
        if self.batched:
            batch = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        metrics = self._update_sac(batch) if self.config.algo == "sac" else self._update_flow(batch)
        metrics = {k: (v if self.batched else v[0]) if isinstance(v, Tensor) else v for k, v in metrics.items()}
        if not sync:
            return metrics
        keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
        values = torch.stack([metrics[k].detach().float() for k in keys]).tolist() if keys else []
        return {**metrics, **dict(zip(keys, values))}

    def _bootstraps(self, batch: dict[str, Tensor]) -> bool:
        """Whether any transition bootstraps from V(s') (never with ``exact_q``).

        The one host read of the update (control flow, not validation): a batch that is all terminal
        (e.g. a one-step bandit) needs no ODE solve at s'.
        """
        return self.exact_q is None and bool(batch["mask"].any())

    def _seed_cat(self, a: Tensor, b: Tensor) -> Tensor:
        """Rows of a and b (each seed-major, B/S per seed) joined per seed: seed s's rows of a, then of b."""
        S = self.n_seeds
        return torch.cat([a.reshape(S, -1, *a.shape[1:]), b.reshape(S, -1, *b.shape[1:])], 1).reshape(-1, *a.shape[1:])

    def _seed_split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The inverse of :meth:`_seed_cat` for two halves of equal size."""
        x = x.reshape(self.n_seeds, 2, -1, *x.shape[1:])
        return x[:, 0].reshape(-1, *x.shape[3:]), x[:, 1].reshape(-1, *x.shape[3:])

    def _endpoints_and_next_value(self, batch: dict[str, Tensor], n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """With the pre-update actor and critic: n particles at s (B, n, d), the endpoint u1 (B, d), and the
        target value min_i Qtarg_i(s', a') with a' a Boltzmann pick of M particles at s' (None when no
        transition bootstraps).

        When n = M the particles at s and at s' come from one ODE solve over both sets of states, and
        the two Boltzmann picks from one critic evaluation: the same computation in half the operations
        (kernel launches, which is what costs on a GPU; not measured here, no GPU was available). On a
        CPU the solve is arithmetic-bound and this measured no faster (``benchmarks/loop.py --baseline``,
        rfm_teach/results/loop/pendulum_tiny_cpu).
        """
        cfg, obs, next_obs, gen = self.config, batch["obs"], batch["next_obs"], self.generator
        boltzmann, bootstraps = cfg.endpoints == "boltzmann", self._bootstraps(batch)
        if bootstraps and n == cfg.particles:
            both_obs = self._seed_cat(obs, next_obs)
            particles, next_particles = self._seed_split(self._latents(both_obs, n, gen))
            if boltzmann:
                u1, u_next = self._seed_split(self._pick(both_obs, self._seed_cat(particles, next_particles), "boltzmann", gen))
            else:
                u1, u_next = particles[:, 0], self._pick(next_obs, next_particles, "boltzmann", gen)
        else:
            particles = self._latents(obs, n, gen)
            u1 = self._pick(obs, particles, "boltzmann", gen) if boltzmann else particles[:, 0]
            if not bootstraps:
                return particles, u1, None
            u_next = self.choose(next_obs, "boltzmann")
        return particles, u1, self.critic_target.q_min(next_obs, torch.tanh(u_next))

    def _update_flow(self, batch: dict[str, Tensor]) -> dict[str, float | Tensor]:
        cfg = self.config
        with torch.no_grad():
            # The M particles are drawn once: they feed the Boltzmann choice of u1 and the proposal.
            n = cfg.particles if (cfg.endpoints == "boltzmann" or cfg.proposal == "policy") else 1
            particles, u1, next_value = self._endpoints_and_next_value(batch, n)
        critic_loss = self._critic_update(batch, next_value)
        info = self.actor_update(batch["obs"], particles, u1)
        self._polyak()
        return {"critic_loss": critic_loss, **info}

    def actor_update(self, obs: Tensor, particles: Tensor, u1: Tensor) -> dict[str, float | list[float] | Tensor]:
        """One actor step at the states ``obs`` (B, ds), seed-major, towards the Boltzmann policy of the current
        critic: the regression target at u_t placed around the endpoints ``u1`` (B, d) is the configured
        estimate of E[u1 | u_t], with ``particles`` (B, M, d) as the proposal's prior samples
        (``proposal="policy"``; online the policy's own, which also give u1), or the exact mean with
        ``exact_target``, or QSM's. Per-seed metrics (S,): actor_loss, ess, c (NaN where undefined), temperature.
        """
        cfg = self.config
        temp, row_temp = self._seed_temperature(), self._row_temperature(obs.shape[0], 2)

        def q(a: Tensor) -> Tensor:  # draws (B, K, d) -> (B, K): the state-conditioned (updated) critic
            return self.q_value(obs[:, None, :].expand(-1, a.shape[1], -1), a)

        if isinstance(temp, float):
            target = Boltzmann(q, temp, squash=True, check=False)
        else:  # one lambda per seed: exp(Q / lambda_row) is Boltzmann(Q / lambda_row, 1)
            target = Boltzmann(lambda a: q(a) / row_temp, 1.0, squash=True, check=False)
        path = self.actor.path
        if cfg.algo == "qsm":
            def exact_mu1(u_t: Tensor, t: Tensor) -> Tensor:
                return qsm_mean(target, u_t, t, path=path, check=False)

            prior = None
        elif cfg.exact_target:
            def exact_mu1(u_t: Tensor, t: Tensor) -> Tensor:
                return self.exact_posterior(obs, u_t, t, path)

            prior = None
        else:
            exact_mu1, prior = None, (particles if cfg.proposal == "policy" else None)
        actor_loss, info = self.actor.loss(obs, u1, target, temperature=temp, K=cfg.K, cv=cfg.cv,
                                           generator=self.generator, exact_mu1=exact_mu1, prior_samples=prior,
                                           mixture=cfg.mixture, adaptive=cfg.adaptive_share, check=False)
        self._step(self.actor_optim, actor_loss, list(self.actor.parameters()))
        nan = torch.full((self.n_seeds,), math.nan, device=self.device)
        return {"actor_loss": info["loss"],
                "ess": nan if info.get("ess") is None else info["ess"],
                "c": nan if info.get("c") is None else info["c"],
                "temperature": self.temperature}

    def _update_sac(self, batch: dict[str, Tensor]) -> dict[str, float | Tensor]:
        S, obs = self.n_seeds, batch["obs"]
        alpha = self.log_alpha.detach().exp().repeat_interleave(obs.shape[0] // S)  # (B,) per row
        next_value = None
        if self.exact_q is None:
            with torch.no_grad():
                u_next, logp_next = self.actor.rsample(batch["next_obs"], self.generator)
                next_value = self.critic_target.q_min(batch["next_obs"], torch.tanh(u_next)) - alpha * logp_next
        critic_loss = self._critic_update(batch, next_value)
        u, logp = self.actor.rsample(obs, self.generator)
        actor_loss = seeds.seed_mean(alpha * logp - self.q_value(obs, torch.tanh(u)), S)  # (S,)
        self._step(self.actor_optim, actor_loss.sum(), list(self.actor.parameters()))
        alpha_loss = -(self.log_alpha * (seeds.seed_mean(logp.detach(), S) + self.target_entropy))
        self._step(self.alpha_optim, alpha_loss.sum(), [self.log_alpha])
        self._polyak()
        return {"critic_loss": critic_loss, "actor_loss": actor_loss.detach(), "alpha": self.log_alpha.detach().exp(),
                "entropy": -seeds.seed_mean(logp.detach(), S)}

    # ---- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: networks, optimisers, generators, temperatures."""
        state = {
            "config": asdict(self.config),
            "seeds": self.seeds,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "generator": self.generator.get_state() if self.batched else [self.generator.get_state()],  # one per seed
            "temperatures": self.temperatures,
        }
        if self.config.algo == "sac":
            state["log_alpha"] = self.log_alpha.detach().clone()
            state["alpha_optim"] = self.alpha_optim.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (the whole state, seeds included); the config and the number of seeds must match.

        A one-seed batch (``seed=[s]``, what :func:`rfm_teach.train.train` builds) and an agent built with
        ``seed=s`` have the same state and load each other's. A field missing from the checkpoint's config
        was added after it was written and takes its default, which is what every earlier version did.
        """
        saved = {**asdict(AgentConfig()), **state["config"]}
        if saved != asdict(self.config):
            raise ValueError(f"checkpoint config {state['config']} differs from this agent's {asdict(self.config)}")
        if len(state["seeds"]) != self.n_seeds:
            raise ValueError(f"checkpoint has {len(state['seeds'])} seeds {state['seeds']}; this agent has {self.n_seeds}")
        for name in ("actor", "critic", "critic_target", "actor_optim", "critic_optim"):
            getattr(self, name).load_state_dict(state[name])
        self.seeds = list(state["seeds"])
        self.generator.set_state(state["generator"] if self.batched else state["generator"][0])
        self.temperatures = state["temperatures"]
        if self.config.algo == "sac":
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
            self.alpha_optim.load_state_dict(state["alpha_optim"])
