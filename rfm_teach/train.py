"""The online loop: environment, replay buffer, update schedule, evaluation, CSV logs, exact checkpoint/resume.

::

    for step i = 0 .. total_steps - 1:
        a = uniform in [-1, 1]^d           if i < warmup_steps        (no updates during warm-up)
            agent.act(s, behaviour mode)   otherwise                  (Boltzmann particles; SAC: a sample)
        s', r, terminated, truncated = env.step(a);  store (s, a, r, s', mask = 1 - terminated)
        if i >= warmup_steps: utd updates on batches drawn uniformly from the buffer
        every eval_every steps: evaluate best-of-N ("argmax"; SAC: tanh(mean)) and raw-sample returns, and the
            fraction of raw-sample action coordinates at the box walls (|a_j| > 0.95); one CSV row
        at the first episode end after every checkpoint_every steps: write a checkpoint (atomically)

Exact resume. A checkpoint holds the networks, optimisers, the agent's torch generator, the buffer and
its numpy generator, the warm-up generator, the env's generator and torch's global RNG state, and it is
written only at an episode boundary, *before* the env is reset. A resumed run resets the env from the
restored generator and continues bit-for-bit: on the same device and thread count it writes the same
CSV rows (wall time aside) as a run that was never stopped. Evaluation uses its own environments and a
generator seeded from (seed, step), so it never perturbs training.

:func:`train_seeds` runs the same loop for S seeds at once: one batched agent (:mod:`rfm_teach.seeds`),
S environments stepped in lockstep, S buffers, one batched update per step; each seed writes the
directory its own :func:`train` run would.

Derived in notebooks/07_online_bandit.ipynb and 08_scaling_up.ipynb.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from .agent import Agent, AgentConfig, _check_int
from .seeds import SeedGenerators
from .envs import make_env

__all__ = [
    "LOG_COLUMNS",
    "PRESETS",
    "ReplayBuffer",
    "TrainConfig",
    "evaluate",
    "make_config",
    "resolve_device",
    "batch_checkpoint",
    "train",
    "train_seeds",
]

#: One row per evaluation. Losses and diagnostics are means over the updates since the previous row
#: (empty when there were none or when the algorithm has no such quantity).
LOG_COLUMNS: tuple[str, ...] = (
    "step", "episodes", "return_argmax", "return_raw", "wall_raw", "train_return", "wall_time_s",
    "critic_loss", "actor_loss", "ess", "c", "temperature", "alpha",
)

#: An action coordinate with |a_j| above this is "at the wall" of the [-1, 1] box (``wall_raw``).
WALL = 0.95


@dataclass
class TrainConfig:
    """Everything a run needs; defaults are the authors' DMC protocol (configs/default.yaml of
    azizanlab/ReverseFlowMatching: 250k steps, 10k random warm-up steps, batch 256, one update per step).

    The command line is generated from this class and :class:`~rfm_teach.agent.AgentConfig`
    (``rfm-teach train --help`` lists every field with the text below), and every manifest records it.

    Attributes:
        env_id: see :func:`rfm_teach.envs.make_env`.
        seed: seeds the env, the agent, the buffer and the warm-up actions.
        total_steps: environment steps (250k in the paper).
        warmup_steps: uniformly random actions and no updates for this many steps (10k).
        batch_size: transitions per update (256).
        utd: updates per environment step (1).
        buffer_size: replay capacity (250k, i.e. the whole run).
        eval_every: steps between evaluations (10k); the last step is always evaluated.
        eval_episodes: episodes per evaluation (25, run side by side).
        checkpoint_every: steps between checkpoints (taken at the next episode end); None = only at the end.
        max_episode_steps: override the env's time limit (None keeps it; tiny CPU runs use shorter episodes).
        device: "auto" (CUDA when present), "cpu" or "cuda[:i]".
        agent: :class:`~rfm_teach.agent.AgentConfig`.
    """

    env_id: str = "cheetah-run"
    seed: int = 0
    total_steps: int = 250_000
    warmup_steps: int = 10_000
    batch_size: int = 256
    utd: int = 1
    buffer_size: int = 250_000
    eval_every: int = 10_000
    eval_episodes: int = 25
    checkpoint_every: int | None = 50_000
    max_episode_steps: int | None = None
    device: str = "auto"
    agent: AgentConfig = field(default_factory=AgentConfig)

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad value (before any env or network is built); return self."""
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError(f"env_id must be a non-empty string; got {self.env_id!r}")
        _check_int("seed", self.seed, 0)
        for name in ("total_steps", "batch_size", "utd", "buffer_size", "eval_every", "eval_episodes"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.checkpoint_every is not None:
            _check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.max_episode_steps is not None:
            _check_int("max_episode_steps", self.max_episode_steps, 1)
        if self.batch_size > max(self.warmup_steps, 1) and self.warmup_steps < self.total_steps:
            raise ValueError(
                f"batch_size ({self.batch_size}) must not exceed warmup_steps ({self.warmup_steps}): the first "
                "update samples a batch from the warm-up data"
            )
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size ({self.buffer_size}) must be >= batch_size ({self.batch_size})")
        resolve_device(self.device)
        if not isinstance(self.agent, AgentConfig):
            raise TypeError(f"agent must be an AgentConfig; got {type(self.agent).__name__}")
        self.agent.validate()
        return self

    def to_dict(self) -> dict:
        """The config as JSON values (tuples as lists), exactly as it reads back from a manifest."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        data = dict(data)
        agent = data.pop("agent", {})
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"unknown TrainConfig keys {sorted(set(data) - known)}")
        agent_known = {f.name for f in fields(AgentConfig)}
        if set(agent) - agent_known:
            raise ValueError(f"unknown AgentConfig keys {sorted(set(agent) - agent_known)}")
        return cls(**data, agent=AgentConfig(**agent))


#: "paper": the authors' protocol. "tiny": a CPU-sized run (minutes) that exercises every part of the
#: loop with small networks, few particles and draws, and short warm-up and evaluation.
PRESETS: dict[str, dict] = {
    "paper": {},
    "tiny": {
        "total_steps": 2_000,
        "warmup_steps": 256,
        "batch_size": 64,
        "buffer_size": 20_000,
        "eval_every": 500,
        "eval_episodes": 5,
        "checkpoint_every": 1_000,
        # actor_lr 3e-3 (the paper: 3e-4): on the bandit at 3000 steps the raw policy reaches 94 % of
        # E_pi*[r] with it and 65 % with 3e-4 (seed 0; rfm_teach/results/bandit/explore/); 93 % over
        # five seeds (rfm_teach/results/bandit/seeds5_tiny_steps3000_T0.2/rfm).
        "agent": {"hidden": 64, "critic_hidden": 64, "emb_dim": 32, "K": 32, "particles": 16, "actor_lr": 3e-3},
    },
}


def make_config(preset: str = "paper", **overrides) -> TrainConfig:
    """A validated :class:`TrainConfig` from a preset plus overrides; ``agent=`` takes a dict of AgentConfig fields.

    Example: ``make_config("tiny", env_id="HalfCheetah-v5", agent={"algo": "sac"})``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    values = {k: v for k, v in PRESETS[preset].items() if k != "agent"}
    agent_values = dict(PRESETS[preset].get("agent", {}))
    agent_override = overrides.pop("agent", {})
    if isinstance(agent_override, AgentConfig):
        agent_override = asdict(agent_override)
    agent_values.update(agent_override)
    values.update(overrides)
    return TrainConfig.from_dict({**values, "agent": agent_values}).validate()


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else must be a valid torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', mask) with uniform sampling from its own numpy generator.

    Shapes: stored as float32 arrays (capacity, ds), (capacity, d), (capacity,); :meth:`sample` returns
    torch tensors (B, .) on ``device``.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.mask = np.zeros(capacity, np.float32)
        self.size = self.ptr = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, action, reward: float, next_obs, mask: float) -> None:
        i = self.ptr
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i], self.mask[i] = obs, action, reward, next_obs, mask
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, self.size, batch_size)
        return {name: torch.as_tensor(getattr(self, name)[idx], device=self.device)
                for name in ("obs", "action", "reward", "next_obs", "mask")}

    def state_dict(self) -> dict:
        n = self.size
        arrays = {name: torch.from_numpy(getattr(self, name)[:n].copy())
                  for name in ("obs", "action", "reward", "next_obs", "mask")}
        return {**arrays, "size": n, "ptr": self.ptr, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for name in ("obs", "action", "reward", "next_obs", "mask"):
            getattr(self, name)[:n] = state[name].numpy()
        self.size, self.ptr = n, state["ptr"]
        self.rng.bit_generator.state = state["rng"]


def _env_rng_state(env: gym.Env):
    """The random state a reset draws from: gymnasium's np_random (a legacy RandomState under shimmy's DMC)."""
    rng = env.unwrapped.np_random
    return rng.get_state() if isinstance(rng, np.random.RandomState) else rng.bit_generator.state


def _set_env_rng_state(env: gym.Env, state) -> None:
    rng = env.unwrapped.np_random
    if isinstance(rng, np.random.RandomState):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


def _make(config: TrainConfig, seed: int | None) -> gym.Env:
    env = make_env(config.env_id, seed)
    if config.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    return env


@torch.no_grad()
def evaluate(agent: Agent, envs, mode: str, *, seed):
    """Undiscounted returns of one episode per env, all run side by side with batched action choice,
    and the fraction of the action coordinates taken (every step of every episode) with |a_j| > WALL.

    Env j is reset with seed 10_000 + j (the same start states at every evaluation, away from the
    training seed); the agent's particles come from a fresh generator seeded with ``seed``.
    ``mode``: "argmax" (best of N particles by Q, the authors' protocol; for SAC the deterministic
    tanh(mean) action, as published SAC numbers are evaluated) or "raw" (one policy sample).

    One seed: ``envs`` a list of E envs, ``seed`` an int -> (E returns, wall fraction). A batch of S seeds
    (``agent.batched``): ``envs`` S lists of E envs, ``seed`` S ints -> (S lists of E returns, S fractions). Every env
    gets an action at every step until the last episode ends (a finished env's action is discarded),
    so the random numbers one seed draws do not depend on how long any episode lasts.
    """
    batched = agent.batched
    env_sets = [list(e) for e in envs] if batched else [list(envs)]
    gens = SeedGenerators(list(seed) if batched else [seed], agent.device)
    n_env = len(env_sets[0])
    obs = np.stack([np.stack([env.reset(seed=10_000 + j)[0] for j, env in enumerate(row)]) for row in env_sets])
    returns = np.zeros((len(env_sets), n_env))
    active = np.ones((len(env_sets), n_env), bool)
    walls, taken = np.zeros(len(env_sets)), np.zeros(len(env_sets))
    while active.any():
        actions = agent.act(torch.as_tensor(obs if batched else obs[0], dtype=torch.float32), mode,
                            gens if batched else gens[0]).cpu().numpy().reshape(len(env_sets), n_env, -1)
        walls += ((np.abs(actions) > WALL) * active[..., None]).sum((1, 2))
        taken += active.sum(1) * actions.shape[-1]
        for s, row in enumerate(env_sets):
            for j, env in enumerate(row):
                if active[s, j]:
                    obs[s, j], r, terminated, truncated, _ = env.step(actions[s, j])
                    returns[s, j] += float(r)
                    active[s, j] = not (terminated or truncated)
    fractions = walls / taken
    return (returns.tolist(), fractions.tolist()) if batched else (returns[0].tolist(), float(fractions[0]))


class _Log:
    """Appends rows to ``log.csv``; on resume drops rows past the checkpoint (written after it, then lost)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None or not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)
        else:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow({k: _fmt(row.get(k)) for k in LOG_COLUMNS})


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _save_atomic(state: dict, path: Path) -> None:
    """Write to ``path.tmp`` then rename: a crash mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _manifest_extra(config: TrainConfig, step: int, batch: list[int]) -> dict:
    """What a manifest says about a run of the loop: the full config, the steps reached, the protocol."""
    a = config.agent
    argmax = ("the deterministic tanh(mean) action" if a.algo == "sac"
              else f"best of {a.particles} policy particles by min-Q")
    extra = {
        "env_id": config.env_id, "algo": a.algo, "steps": step, "finished": step >= config.total_steps,
        "evaluation": {
            "return_argmax": f"{argmax}, {config.eval_episodes} episodes",
            "return_raw": f"one policy sample per step, {config.eval_episodes} episodes",
            "wall_raw": f"fraction of the raw-sample episodes' action coordinates with |a_j| > {WALL}",
        },
        "config": config.to_dict(),
    }
    if len(batch) > 1:
        extra["batched_seeds"] = batch  # trained together in one process (rfm_teach.seeds)
    return extra


def train(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          checkpoint_path: str | os.PathLike | None = None, stop_after: int | None = None,
          progress: bool = True, command: str | None = None) -> dict:
    """Run (or resume) one seed of online training; write ``config.json``, ``log.csv`` and ``manifest.json``
    into ``run_dir``.

    The manifest (see :mod:`rfm_teach.results`) is written here, not by the command line, so a run started
    from Python records the same facts as ``rfm-teach train``: the full config under ``extra.config``, the
    steps reached, ``extra.finished`` (False for a run split with ``stop_after``), the evaluation
    protocol, versions, device, threads and file hashes. A stale manifest is removed when a run starts.

    Args:
        config: a :class:`TrainConfig` (validated here, before anything is built).
        run_dir: output directory for small, shippable files (created if needed).
        resume: continue from ``checkpoint_path`` (the config must match, except ``total_steps``, which
            may grow). A missing checkpoint raises ValueError: silently starting over would overwrite the
            log of the run one meant to continue.
        checkpoint_path: default ``run_dir/../checkpoints/<run_dir name>.pt``, outside the run
            directory so that the run directory stays small enough to store with a manifest.
        stop_after: stop at the first episode end at or after this many steps and checkpoint there
            (to split a long job, or to test exact resume).
        progress: show a tqdm bar.
        command: the command line recorded in the manifest (the CLI passes its own); default
            ``"python: rfm_teach.train.train(config, run_dir)"``.

    Returns:
        {"step", "wall_time_s", "log": path of log.csv, "checkpoint": path, "final_eval": last CSV row
        (None if no evaluation happened), "device": "cpu" or "cuda"}.
    """
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else run_dir.parent / "checkpoints" / f"{run_dir.name}.pt"
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    result = _run(config, [config.seed], [run_dir], ckpt, resume=resume,
                  stop_after=stop_after, progress=progress,
                  command=command or "python: rfm_teach.train.train(config, run_dir)")
    run = result["runs"][0]
    return {"step": result["step"], "wall_time_s": result["wall_time_s"], "log": run["log"],
            "checkpoint": result["checkpoint"], "final_eval": run["final_eval"], "device": result["device"]}


def train_seeds(config: TrainConfig, seeds: Sequence[int], out: str | os.PathLike, *, resume: bool = False,
                stop_after: int | None = None, progress: bool = True, command: str | None = None) -> dict:
    """Train S seeds together in one process: one batched agent (:mod:`rfm_teach.seeds`), S environments
    stepped in lockstep, one batched update per step.

    Seed s writes ``out/seed_<s>/`` = {config.json, log.csv, manifest.json} exactly as :func:`train` of
    ``replace(config, seed=s)`` would (its config.json is that config; the manifest adds
    ``extra.batched_seeds``), and the batch checkpoints to ``out/checkpoints/seeds_<s0>_<s1>_...pt``.
    Seed s draws the same random numbers and computes the same operations as it would alone: its log is
    that of a separate run bit for bit when the batch size, particles and widths are multiples of 16 (every
    preset), else to rounding (see :mod:`rfm_teach.seeds`). A checkpoint is taken at a
    step where every seed's episode ends together (always, for environments whose episodes all have
    the same length, e.g. Pendulum, HalfCheetah, DMC and the bandit); where episodes end at different
    times, only the finished run is checkpointed.

    Returns: {"step", "wall_time_s", "checkpoint", "device", "runs": [{"seed", "log", "final_eval"} per seed]}.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty sequence of distinct ints; got {seeds}")
    for seed in seeds:
        _check_int("seed", seed, 0)
    out = Path(out)
    return _run(config, seeds, [out / f"seed_{s}" for s in seeds], batch_checkpoint(out, seeds), resume=resume, stop_after=stop_after,
                progress=progress, command=command or "python: rfm_teach.train.train_seeds(config, seeds, out)")


def batch_checkpoint(out: str | os.PathLike, seeds: Sequence[int]) -> Path:
    """Where :func:`train_seeds` checkpoints the batch ``seeds`` run into ``out``: ``out/checkpoints/seeds_<s0>_<s1>_....pt``."""
    return Path(out) / "checkpoints" / ("seeds_" + "_".join(str(s) for s in seeds) + ".pt")


def _run(config: TrainConfig, seeds: list[int], run_dirs: list[Path], ckpt: Path, *, resume: bool,
         stop_after: int | None, progress: bool, command: str) -> dict:
    """The loop of :func:`train` and :func:`train_seeds` for S = len(seeds) seeds (S = 1 for ``train``)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    config.validate()
    if stop_after is not None:
        _check_int("stop_after", stop_after, 1)
    if resume and not ckpt.exists():
        raise ValueError(f"resume: no checkpoint at {str(ckpt)!r}; start without resume to begin a fresh run")
    if config.total_steps <= config.warmup_steps:
        warnings.warn(f"total_steps ({config.total_steps}) <= warmup_steps ({config.warmup_steps}): no update "
                      "will run; the run measures the untrained policy", UserWarning, stacklevel=3)
    device = resolve_device(config.device)
    from .results import MANIFEST, write_manifest

    S = len(seeds)
    configs = [replace(config, seed=s) for s in seeds]
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST).unlink(missing_ok=True)  # the files are about to change

    envs = [_make(config, s) for s in seeds]
    eval_envs = [[_make(config, None) for _ in range(config.eval_episodes)] for _ in seeds]
    obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    agent = Agent(obs_dim, act_dim, config.agent, device=device, seed=seeds)
    buffers = [ReplayBuffer(obs_dim, act_dim, config.buffer_size, s + 1, device) for s in seeds]
    warmup_rngs = [np.random.default_rng(s + 2) for s in seeds]

    start, wall_before, episodes, recent = 0, 0.0, [0] * S, [[] for _ in seeds]
    if resume:
        state = torch.load(ckpt, weights_only=False)  # our own file: numpy RNG states are plain dicts
        saved = TrainConfig.from_dict(state["config"])
        if replace(saved, total_steps=config.total_steps) != config or state["seeds"] != seeds:
            raise ValueError(f"the checkpoint {ckpt} was written with a different config or seeds: {saved}, "
                             f"seeds {state['seeds']} vs {config}, seeds {seeds}")
        agent.load_state_dict(state["agent"])
        for s in range(S):
            buffers[s].load_state_dict(state["buffers"][s])
            warmup_rngs[s].bit_generator.state = state["warmup_rngs"][s]
            _set_env_rng_state(envs[s], state["env_rngs"][s])
        torch.set_rng_state(state["torch_rng"])
        start, wall_before, episodes, recent = state["step"], state["wall_time_s"], state["episodes"], state["recent"]
        metrics = state["metrics"]
    else:
        metrics = [{} for _ in seeds]
        for c, run_dir in zip(configs, run_dirs):
            (run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
    logs = [_Log(run_dir / "log.csv", start if resume else None) for run_dir in run_dirs]
    obs = np.stack([env.reset(seed=None if resume else s)[0] for env, s in zip(envs, seeds)])
    episode_return, last_rows, last_ckpt, t0 = [0.0] * S, [None] * S, start, time.perf_counter()

    def save(step: int) -> None:
        # Called when every episode has just ended, before env.reset(): the envs' RNG states alone
        # recreate the next episodes.
        _save_atomic({
            "config": config.to_dict(), "seeds": seeds, "step": step, "episodes": episodes, "recent": recent,
            "metrics": metrics, "wall_time_s": wall_before + time.perf_counter() - t0, "agent": agent.state_dict(),
            "buffers": [b.state_dict() for b in buffers], "warmup_rngs": [r.bit_generator.state for r in warmup_rngs],
            "torch_rng": torch.get_rng_state(), "env_rngs": [_env_rng_state(env) for env in envs],
        }, ckpt)

    name = f"{config.agent.algo} {config.env_id}" + (f" x{S} seeds" if S > 1 else "")
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress, desc=name)
    step = start
    while step < config.total_steps:
        if step == config.warmup_steps and step > 0:
            agent.calibrate_temperature(torch.from_numpy(np.stack([b.reward[: b.size] for b in buffers])))
        if step < config.warmup_steps:
            action = np.stack([rng.uniform(-1.0, 1.0, act_dim).astype(np.float32) for rng in warmup_rngs])
        else:
            action = agent.act(torch.as_tensor(obs[:, None], dtype=torch.float32), agent.behaviour_mode)[:, 0].cpu().numpy()
        done = [False] * S
        for s, env in enumerate(envs):
            next_obs, reward, terminated, truncated, _ = env.step(action[s])
            buffers[s].add(obs[s], action[s], float(reward), next_obs, 0.0 if terminated else 1.0)
            episode_return[s] += float(reward)
            obs[s] = next_obs
            done[s] = terminated or truncated
        if step >= config.warmup_steps:
            for _ in range(config.utd):
                samples = [b.sample(config.batch_size) for b in buffers]
                batch = {k: torch.stack([x[k] for x in samples]) for k in samples[0]}
                for key, values in agent.update(batch).items():
                    for s, value in enumerate(values if isinstance(values, list) else [values] * S):
                        total, count = metrics[s].get(key, (0.0, 0))
                        metrics[s][key] = (total + value, count + 1)
        step += 1
        bar.update(1)
        if step % config.eval_every == 0 or step == config.total_steps:
            argmax, _ = evaluate(agent, eval_envs, "argmax", seed=[s * 7919 + step for s in seeds])
            raw, wall_raw = evaluate(agent, eval_envs, "raw", seed=[s * 7919 + step + 1 for s in seeds])
            wall = wall_before + time.perf_counter() - t0
            temps = agent.temperature
            for s in range(S):
                last_rows[s] = {
                    "step": step, "episodes": episodes[s],
                    "return_argmax": float(np.mean(argmax[s])), "return_raw": float(np.mean(raw[s])),
                    "wall_raw": wall_raw[s],
                    "train_return": float(np.mean(recent[s])) if recent[s] else None, "wall_time_s": wall,
                    "temperature": temps[s],
                    **{key: total / count for key, (total, count) in metrics[s].items() if key != "temperature"},
                }
                logs[s].write(last_rows[s])
            bar.set_postfix(argmax=f"{np.mean([r['return_argmax'] for r in last_rows]):.3g}",
                            raw=f"{np.mean([r['return_raw'] for r in last_rows]):.3g}")
            metrics = [{} for _ in seeds]
        for s in range(S):
            if done[s]:
                episodes[s] += 1
                recent[s] = (recent[s] + [episode_return[s]])[-10:]
                episode_return[s] = 0.0
        if all(done):  # a checkpoint needs every episode at its end (the envs are then reset from their RNG states)
            due = config.checkpoint_every is not None and step - last_ckpt >= config.checkpoint_every
            stopping = stop_after is not None and step >= stop_after
            if due or stopping:
                save(step)
                last_ckpt = step
            if stopping:
                break
        if step < config.total_steps:
            for s in range(S):
                if done[s]:
                    obs[s] = envs[s].reset()[0]
    else:
        save(step)  # the finished run: resumable with a larger total_steps (exactly so if it ended an episode)
    bar.close()
    for e in (*envs, *(e for row in eval_envs for e in row)):
        e.close()
    wall = wall_before + time.perf_counter() - t0
    for s, (c, run_dir) in enumerate(zip(configs, run_dirs)):
        write_manifest(run_dir, command=command, seeds=[c.seed], extra=_manifest_extra(c, step, seeds),
                       wall_time_s=wall, device=device.type)
    return {"step": step, "wall_time_s": wall, "checkpoint": ckpt, "device": device.type,
            "runs": [{"seed": c.seed, "log": run_dir / "log.csv", "final_eval": row}
                     for c, run_dir, row in zip(configs, run_dirs, last_rows)]}
