"""Environments for the online loop: a contextual 2D bandit with exact answers, MuJoCo v5 and DMC tasks.

Every maker returns a ``gymnasium.Env`` with a flat float observation and a ``Box`` action space
rescaled to [-1, 1]^d, which is what the tanh-squashed policies of :mod:`rfm_teach.policies` produce.

- ``"rfm_teach/ContextualBandit-v0"``: one-step episodes; a one-hot context picks a 2D toy landscape,
  and the optimal soft policy and its return are exact on a grid (:class:`ContextualBandit`).
- any registered Gymnasium id with a ``Box`` action space, e.g. the MuJoCo v5 tasks of
  :data:`MUJOCO_TASKS`; actions rescaled to [-1, 1], MuJoCo's stray warning silenced.
- the paper's DeepMind Control tasks (:data:`DMC_TASKS`, e.g. ``"cheetah-run"``) or any
  ``"dm_control/<domain>-<task>-v0"``, through ``dm_control`` + ``shimmy`` (optional extra
  ``pip install rfm_teach[dmc]``); observations flattened.

Shapes: observations (ds,) float, actions (d,) in [-1, 1]^d.

Derived in notebooks/07_online_bandit.ipynb and 08_scaling_up.ipynb.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from .targets import AnisotropicQuadratic, Boltzmann, ExactGrid, RingOfModes, TwoMoons

__all__ = [
    "BANDIT_ID",
    "BANDIT_LANDSCAPES",
    "DMC_TASKS",
    "MUJOCO_TASKS",
    "BanditPosterior",
    "BanditQ",
    "ContextualBandit",
    "bandit_reward",
    "make_env",
]

BANDIT_ID = "rfm_teach/ContextualBandit-v0"
#: The five MuJoCo v5 tasks the book talks about (any other registered Box-action id works too).
MUJOCO_TASKS: tuple[str, ...] = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5")
#: The paper's eight DeepMind Control tasks (the task list of run.sh in azizanlab/ReverseFlowMatching), as "<domain>-<task>".
DMC_TASKS: tuple[str, ...] = (
    "cheetah-run",
    "cartpole-swingup",
    "fish-swim",
    "fish-upright",
    "walker-walk",
    "walker-run",
    "finger-spin",
    "finger-turn_hard",
)


#: The bandit's landscapes: the book's toys, widened so that exp(r / temperature) at the bandit's
#: temperature (0.1) keeps modes a small network can resolve within a CPU-minute of training.
BANDIT_LANDSCAPES: tuple[Callable[[Tensor], Tensor], ...] = (
    RingOfModes(n_modes=4, radius=0.6, width=0.2),
    TwoMoons(width=0.12),
    AnisotropicQuadratic(),
)


def bandit_reward(landscape: Callable[[Tensor], Tensor], action: Tensor) -> Tensor:
    """Reward of the contextual bandit in a context with toy landscape Q_c: r(a) = exp(Q_c(a)).

    ``exp`` turns each toy's log-sum of Gaussian bumps into a sum of bumps, so rewards lie in (0, ~1]
    like DeepMind Control's, where the paper's temperature scale applies.

    Shapes: ``action`` (..., 2) -> (...,).
    """
    return torch.exp(landscape(action))


class BanditQ:
    """The contextual bandit's exact action value, Q(c, a) = r(c, a), for the agent's ``exact_q="bandit"``.

    Every episode of :class:`ContextualBandit` is one step, so the Bellman target is the reward itself
    and the true Q of any policy is r. With a one-hot context c (the observation)::

        Q(s, a) = sum_c s_c exp(Q_c(a))              (= r(c, a) for s = onehot(c))

    Replacing the learned critics by this function separates the critic's error from the estimator's
    and the actor's. Differentiable in ``a`` (the gradient-expectation and control-variate estimators
    need grad_a Q).

    Shapes: ``obs`` (..., n_contexts), ``act`` (..., 2) with the same leading shape -> (...).
    """

    def __init__(self, landscapes: tuple[Callable[[Tensor], Tensor], ...] = BANDIT_LANDSCAPES) -> None:
        self.landscapes = tuple(landscapes)

    def __repr__(self) -> str:
        return f"BanditQ(n_contexts={len(self.landscapes)})"

    def __call__(self, obs: Tensor, act: Tensor) -> Tensor:
        if obs.shape[-1] != len(self.landscapes) or act.shape[-1] != 2:
            raise ValueError(
                f"BanditQ needs obs (..., {len(self.landscapes)}) one-hot contexts and actions (..., 2); "
                f"got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        rewards = torch.stack([bandit_reward(q, act) for q in self.landscapes], -1)  # (..., n_contexts)
        return (obs.to(rewards.dtype) * rewards).sum(-1)


class BanditPosterior:
    """The exact posterior mean E[u1 | u_t] of the bandit's latent Boltzmann target, for each row's context.

    For the agent's ``exact_target=True`` (with ``exact_q="bandit"``): the regression target a perfect
    estimator would give, so that what is left between the raw policy and pi* is the fit's own error
    (network, steps, learning rate, sampler). The latent target of context c is
    p1(u) ∝ exp(r(c, tanh u) / lambda) prod_j (1 - tanh^2 u_j) (:class:`~rfm_teach.targets.Boltzmann`
    with ``squash=True``); the posterior is q1(u | u_t) ∝ p1(u) N(u; u_t / alpha, sigma^2 I),
    sigma = beta / alpha, and its mean is a quadrature over grid points u_g::

        mu1(u_t) = sum_g softmax_g(log p1(u_g) - |u_g - u_t / alpha|^2 / (2 sigma^2)) u_g

    Two grids, so that both ends of t are cheap and accurate. Rows with a narrow kernel (sigma <=
    ``window_sigma``): an ``n_local`` x ``n_local`` grid on the window u_t / alpha ± 5 sigma, with p1
    evaluated there. Rows with a wide one (small t): one fixed ``n`` x ``n`` grid of p1's support
    [-extent, extent]^2, log p1 tabulated once per context (the Jacobian makes p1's latent tails decay
    like e^{-2|u|}, and a kernel that wide cannot pull the posterior off the support). Accuracy against
    finer grids (tests/test_bandit.py): below 1e-2 in u at every t.

    Shapes: ``obs`` (B, n_contexts) one-hot, ``u_t`` (B, 2), ``t`` (B,) -> (B, 2), detached.
    """

    def __init__(self, temperature: float, landscapes: tuple[Callable[[Tensor], Tensor], ...] = BANDIT_LANDSCAPES,
                 *, extent: float = 8.0, n: int = 161, n_local: int = 41, window_sigma: float = 0.5) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0; got {temperature!r}")
        for name, value in (("n", n), ("n_local", n_local)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 3:
                raise ValueError(f"{name} must be an int >= 3 grid points per axis; got {value!r}")
        self.temperature, self.extent, self.window_sigma = float(temperature), float(extent), float(window_sigma)
        self.targets = [Boltzmann(partial(bandit_reward, q), self.temperature, squash=True, check=False)
                        for q in landscapes]
        self.unit = self._square(n_local, 1.0)  # (G_local, 2) on [-1, 1]^2
        self.points = self._square(n, self.extent)  # (G, 2)
        log_p = torch.stack([target.log_density(self.points) for target in self.targets])  # (C, G)
        self.log_p = log_p - torch.logsumexp(log_p, -1, keepdim=True)

    @staticmethod
    def _square(n: int, half: float) -> Tensor:
        axis = torch.linspace(-half, half, n, dtype=torch.float64)
        gx, gy = torch.meshgrid(axis, axis, indexing="xy")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)

    def __repr__(self) -> str:
        return (f"BanditPosterior(temperature={self.temperature}, {self.points.shape[0]} support points, "
                f"{self.unit.shape[0]} window points per row)")

    def __call__(self, obs: Tensor, u_t: Tensor, t: Tensor, path) -> Tensor:
        x = u_t.detach().to(torch.float64)
        tt = t.detach().reshape(-1, 1).to(torch.float64)
        sigma = path.beta(tt) / path.alpha(tt)  # (B, 1)
        centre = x / path.alpha(tt)  # (B, 2)
        context = obs.detach().argmax(-1)
        mu = torch.empty_like(centre)
        wide = sigma[:, 0] > self.window_sigma
        if wide.any():  # the support grid, log p1 tabulated: (B_wide, G)
            c, s2 = centre[wide], sigma[wide] ** 2
            logits = self.log_p[context[wide]] + (c @ self.points.T - 0.5 * (self.points**2).sum(-1)) / s2
            mu[wide] = torch.softmax(logits, -1) @ self.points
        for k, target in enumerate(self.targets):  # each narrow row on its own window: (B_k, G_local, 2)
            rows = ~wide & (context == k)
            if rows.any():
                c, sd = centre[rows], sigma[rows]
                window = c[:, None] + 5 * sd[:, None] * self.unit
                log_q = target.log_density(window) - ((window - c[:, None]) ** 2).sum(-1) / (2 * sd**2)
                mu[rows] = torch.einsum("bg,bgd->bd", torch.softmax(log_q, -1), window)
        return mu.to(u_t.dtype)


class ContextualBandit(gym.Env):
    """A contextual 2D bandit whose optimal soft policy is known exactly on a grid.

    Each episode is one step. ``reset`` draws a context c uniformly from ``landscapes`` (toy
    Q-landscapes of :mod:`rfm_teach.targets`, default :data:`BANDIT_LANDSCAPES`) and returns it one-hot; ``step(a)`` pays
    r(c, a) = exp(Q_c(a)) (see :func:`bandit_reward`) for a in [-1, 1]^2 and ends the episode.
    A one-step episode makes the critic's target the reward itself (no bootstrap), so Q(c, a) = r(c, a)
    and the Boltzmann policy the actor is trained to sample is pi*(a | c) ∝ exp(r(c, a) / temperature)
    on the box.

    Shapes: observation (n_contexts,) float32 one-hot; action (2,) in [-1, 1]^2.
    """

    metadata = {"render_modes": []}

    def __init__(self, landscapes: tuple[Callable[[Tensor], Tensor], ...] = BANDIT_LANDSCAPES) -> None:
        landscapes = tuple(landscapes)
        if not landscapes or not all(callable(q) for q in landscapes):
            raise ValueError(f"landscapes must be a non-empty tuple of callables (..., 2) -> (...); got {landscapes!r}")
        self.landscapes = landscapes
        self.observation_space = spaces.Box(0.0, 1.0, (len(landscapes),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self._context = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(len(self.landscapes), dtype=np.float32)
        obs[self._context] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._context = int(self.np_random.integers(len(self.landscapes)))
        return self._obs(), {"context": self._context}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = torch.as_tensor(np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0))
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,); got {tuple(a.shape)}")
        reward = float(bandit_reward(self.landscapes[self._context], a))
        return self._obs(), reward, True, False, {"context": self._context}

    # ---- exact answers ----------------------------------------------------------------------------
    def exact_grid(self, context: int, temperature: float, n: int = 201) -> ExactGrid:
        """The optimal soft policy pi*(a | c) ∝ exp(r(c, a) / temperature) on an n x n grid of [-1, 1]^2."""
        if not 0 <= context < len(self.landscapes):
            raise ValueError(f"context must be in [0, {len(self.landscapes)}); got {context}")
        target = Boltzmann(partial(bandit_reward, self.landscapes[context]), temperature)
        return ExactGrid(target, extent=1.0, n=n)

    def boltzmann_return(self, temperature: float, n: int = 201) -> float:
        """J* = E_s E_{a ~ pi*(.|s)} [r(s, a)]: the expected reward of the Boltzmann policy, averaged over contexts.

        pi* ∝ exp(r / temperature) on [-1, 1]^2: the plain reward (no entropy bonus) collected by the
        exact Boltzmann policy that RFM targets. The soft value temperature * log ∫ exp(r / temperature) da
        = J* + temperature * H(pi*) is larger. It is what an evaluation with raw policy samples measures when the policy is
        exact; best-of-N evaluation of the same policy scores higher. Computed by quadrature on an
        n x n grid (n = 201 agrees with n = 401 to 1e-4 at temperature >= 0.05).
        """
        values = []
        for c in range(len(self.landscapes)):
            grid = self.exact_grid(c, temperature, n)
            w = torch.softmax(grid.log_p, 0)
            values.append(float(w @ (grid.log_p * temperature)))  # log_p = r / temperature
        return float(np.mean(values))

    def optimal_soft_value(self, temperature: float, n: int = 201) -> float:
        """E_c [temperature * log ∫ exp(r(c, a) / temperature) da]: expected reward plus temperature x entropy."""
        return float(np.mean([temperature * self.exact_grid(c, temperature, n).log_normaliser
                              for c in range(len(self.landscapes))]))

    def max_return(self, n: int = 201) -> float:
        """E_c max_a r(c, a) on the grid: the return of the greedy policy (temperature -> 0)."""
        return float(np.mean([float(self.exact_grid(c, 1.0, n).log_p.max()) for c in range(len(self.landscapes))]))


def _register_bandit() -> None:
    if BANDIT_ID not in gym.registry:
        gym.register(id=BANDIT_ID, entry_point=ContextualBandit)


_register_bandit()


def _silence_mujoco() -> None:
    """Drop MuJoCo's 'settotalmass is deprecated' warning, which it also writes to ./MUJOCO_LOG.TXT.

    Any other MuJoCo warning is passed on as a Python ``RuntimeWarning``.
    """
    import mujoco

    def handler(message: bytes | str) -> None:
        text = message.decode() if isinstance(message, bytes) else str(message)
        if "settotalmass" not in text:
            warnings.warn(f"MuJoCo: {text}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)


def _dmc_id(env_id: str) -> str | None:
    """'cheetah-run' -> 'dm_control/cheetah-run-v0'; a full 'dm_control/...' id unchanged; else None."""
    if env_id.startswith("dm_control/"):
        return env_id
    if env_id in DMC_TASKS:
        return f"dm_control/{env_id}-v0"
    return None


def _make_dmc(full_id: str) -> gym.Env:
    try:
        import shimmy
    except ImportError as err:
        raise ValueError(
            f"{full_id!r} needs the optional DeepMind Control extra: pip install dm_control 'shimmy[dm-control]' "
            f"(or rfm_teach[dmc]); import failed with: {err}"
        ) from err
    gym.register_envs(shimmy)
    if full_id not in gym.registry:
        raise ValueError(f"unknown DeepMind Control task {full_id!r}; the paper's tasks are {DMC_TASKS}")
    try:
        env = gym.make(full_id)
        env.reset(seed=0)
    except AttributeError as err:  # dm_control reads MjModel fields that a newer mujoco renamed
        import mujoco

        raise ValueError(
            f"dm_control could not build {full_id!r} with mujoco {mujoco.__version__}: {err}. dm_control "
            "releases lag behind mujoco; install a mujoco that your dm_control supports (e.g. 'mujoco<4')."
        ) from err
    return gym.wrappers.FlattenObservation(env)


def make_env(env_id: str, seed: int | None = None) -> gym.Env:
    """Build an environment by id with actions in [-1, 1]^d and a flat float observation.

    Args:
        env_id: :data:`BANDIT_ID`, any registered Gymnasium id with a ``Box`` action space (e.g. the
            MuJoCo v5 tasks of :data:`MUJOCO_TASKS`), one of the paper's :data:`DMC_TASKS` or a
            ``"dm_control/<domain>-<task>-v0"`` id.
        seed: if given, ``reset(seed=seed)`` is called once so the env's random stream is fixed;
            the action space is seeded too.

    Raises:
        ValueError: unknown id, a non-Box or non-flat space, or a missing/broken optional extra, before
            any training starts.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id must be a non-empty string; got {env_id!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None; got {seed!r}")
    dmc = _dmc_id(env_id)
    if dmc is not None:
        _silence_mujoco()
        env = _make_dmc(dmc)
    else:
        if env_id not in gym.registry:
            raise ValueError(
                f"unknown env id {env_id!r}; expected {BANDIT_ID!r}, a registered Gymnasium id such as "
                f"{MUJOCO_TASKS}, or a DMC task in {DMC_TASKS}"
            )
        spec = gym.spec(env_id)
        entry = str(spec.entry_point)
        if "mujoco" in entry:
            _silence_mujoco()
        env = gym.make(env_id)
    if not isinstance(env.action_space, spaces.Box):
        name = type(env.action_space).__name__
        env.close()
        raise ValueError(f"{env_id!r} has a {name} action space; rfm_teach agents need a continuous Box action space")
    if not isinstance(env.observation_space, spaces.Box) or len(env.observation_space.shape) != 1:
        space = env.observation_space
        env.close()
        raise ValueError(f"{env_id!r} has observation space {space}; rfm_teach agents need a flat Box observation")
    low, high = env.action_space.low, env.action_space.high
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        env.close()
        raise ValueError(f"{env_id!r} has an unbounded action space; a tanh-squashed policy needs finite bounds")
    if not (np.allclose(low, -1.0) and np.allclose(high, 1.0)):
        with warnings.catch_warnings():  # float64 bounds cast to the env's float32 box: harmless, just noisy
            warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
            env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env

