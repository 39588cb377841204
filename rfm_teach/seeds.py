"""Seeds as a batch dimension: S independent agents computed by one set of tensor operations.

Convention. A seed-batched tensor folds the seed into its leading rows, seed-major: with N rows per
seed, rows [s N, (s + 1) N) belong to seed s. Everything row-wise (the estimators, the paths, the
samplers, the Boltzmann choice) is then unchanged; three things are not row-wise and live here:

- **Networks**: :class:`SeedLinear` holds S weight matrices, one per seed, stacked as (S, out, in), and
  applies W_s to the rows of seed s with one batched matmul (``torch.baddbmm``) instead of S.
- **Randomness**: :class:`SeedGenerators` holds one ``torch.Generator`` per seed. The draw helpers
  :func:`randn`, :func:`rand` and :func:`multinomial` split a draw of B rows into S blocks and take
  block s from generator s, so seed s consumes exactly the numbers it would consume alone. With a
  plain ``torch.Generator`` (or None) they are the torch functions themselves.
- **Reductions**: a loss is a mean per seed, summed over seeds (:func:`seed_mean`), so the gradient
  with respect to seed s's parameters is that of seed s's own loss; gradient clipping is per seed
  (:func:`clip_grad_norm_per_seed`). Adam and Polyak averaging are elementwise and need nothing.

What "the same numbers" means here. Seed s of a batched run draws the same random numbers as a run of
seed s alone and computes the same floating-point operations, so the two agree bit for bit, updates,
evaluations and all (a test checks whole training runs). That needs two things of the kernels. A
matrix product of one row per seed, or with one output (a Q head), would go to a matrix-vector kernel
whose rounding depends on how many matrices are in the batch; those are written as elementwise
products and sums instead (``SeedLinear.forward`` with out = 1, ``SeedLinear.part`` with one row
per seed). And MKL's batched products round the same way for every matrix of a batch only when each
seed's block starts on a 64-byte boundary: true when the rows per seed and the layer widths are
multiples of 16, as in every preset (batch 64, particles 16 or 32, widths 64 or 256). Elsewhere a
batched run agrees with separate runs to rounding (about 1e-8 after an update) and, since RL
trajectories amplify rounding, in distribution after many. ``python benchmarks/seeds.py --identity``
counts the layer shapes that are bit-identical; a batched run is always reproducible bit for bit.

Cost. Batching removes the per-operation overhead S times over, not the arithmetic: where one seed's
update is dominated by the cost of launching small operations (SAC), S seeds cost little more than
one on a CPU; where it is dominated by arithmetic (the tiny-preset RFM update, with its ODE solves of
M particles per state) batching saves less. ``python benchmarks/seeds.py`` measures both against
one seed in the same run (``benchmarks/results/seeds.md``).

Derived in notebooks/08_scaling_up.ipynb.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["SeedGenerators", "SeedLinear", "stack_seeds", "seed_slice", "randn", "rand", "multinomial", "seed_mean",
           "clip_grad_norm_per_seed", "Generator"]


class SeedGenerators(Sequence):
    """One ``torch.Generator`` per seed, generator s seeded with ``seeds[s]``.

    ``get_state`` / ``set_state`` save and restore all of them (a list of byte tensors).
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self._generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed))
            self._generators.append(g)

    def __len__(self) -> int:
        return len(self._generators)

    def __getitem__(self, i):
        return self._generators[i]

    def get_state(self) -> list[Tensor]:
        return [g.get_state() for g in self._generators]

    def set_state(self, states: Sequence[Tensor]) -> None:
        if len(states) != len(self._generators):
            raise ValueError(f"expected {len(self._generators)} generator states; got {len(states)}")
        for g, s in zip(self._generators, states):
            g.set_state(s)


#: What every draw site accepts: one generator (or None, torch's global one) or one per seed.
Generator = torch.Generator | SeedGenerators | None


def _blocks(rows: int, generators: SeedGenerators) -> int:
    return rows // len(generators)


def randn(shape: Sequence[int], generator: Generator, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Standard normal draws of ``shape``; with :class:`SeedGenerators` block s of the rows from generator s."""
    if not isinstance(generator, SeedGenerators):
        return torch.randn(tuple(shape), dtype=dtype, device=device, generator=generator)
    block = (_blocks(shape[0], generator), *shape[1:])
    return torch.cat([torch.randn(block, dtype=dtype, device=device, generator=g) for g in generator])


def rand(shape: Sequence[int], generator: Generator, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Uniform draws on [0, 1) of ``shape``; split over seeds like :func:`randn`."""
    if not isinstance(generator, SeedGenerators):
        return torch.rand(tuple(shape), dtype=dtype, device=device, generator=generator)
    block = (_blocks(shape[0], generator), *shape[1:])
    return torch.cat([torch.rand(block, dtype=dtype, device=device, generator=g) for g in generator])


def multinomial(probs: Tensor, n: int, generator: Generator, *, replacement: bool = False) -> Tensor:
    """``torch.multinomial`` per row of ``probs`` (B, M) -> (B, n); split over seeds like :func:`randn`."""
    if not isinstance(generator, SeedGenerators):
        return torch.multinomial(probs, n, replacement=replacement, generator=generator)
    chunks = probs.split(_blocks(probs.shape[0], generator))
    return torch.cat([torch.multinomial(p, n, replacement=replacement, generator=g) for p, g in zip(chunks, generator)])


def seed_mean(x: Tensor, n_seeds: int) -> Tensor:
    """The mean over each seed's block of rows: x (S N, ...) -> (S,). With S = 1 the plain mean, shape (1,)."""
    return x.reshape(n_seeds, -1).mean(1)


class SeedLinear(nn.Module):
    """S independent affine maps: rows of seed s get y = x W_s^T + b_s.

    Parameters: ``weight`` (S, out, in), ``bias`` (S, out). Built with S = 1 and initialised exactly
    like ``nn.Linear`` (the same draws from torch's global generator); :func:`stack_seeds` joins S of
    them. Shapes: ``forward`` x (..., in) with the flattened leading dimensions seed-major -> (..., out).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(1, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(1, out_features))
        with torch.no_grad():  # nn.Linear.reset_parameters, on the one slice
            nn.init.kaiming_uniform_(self.weight[0], a=math.sqrt(5))
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
            nn.init.uniform_(self.bias[0], -bound, bound)

    @property
    def n_seeds(self) -> int:
        return self.weight.shape[0]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n_seeds={self.n_seeds}"

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x3 = x.reshape(self.n_seeds, -1, self.in_features)
        if self.out_features == 1:  # a dot product per row (see the module docstring: same kernel for any S)
            y = (x3 * self.weight).sum(-1, keepdim=True) + self.bias[:, None]
        else:
            y = torch.baddbmm(self.bias[:, None], x3, self.weight.transpose(1, 2))
        return y.reshape(*lead, self.out_features)

    def part(self, x: Tensor, cols: slice) -> Tensor:
        """x W_s[:, cols]^T without bias: x (R, k) -> (S, R / S, out), or (S, 1, out) when R = 1 (one row shared
        by every seed) or R = S (one row per seed)."""
        w = self.weight[:, :, cols]
        if x.shape[0] in (1, self.n_seeds):  # one row per seed: a dot product per output (module docstring)
            return (w * x[:, None, :]).sum(-1)[:, None]
        return torch.bmm(x.reshape(self.n_seeds, -1, x.shape[-1]), w.transpose(1, 2))


def stack_seeds(modules: Sequence[nn.Module]) -> nn.Module:
    """One module whose every parameter is the concatenation (along dim 0) of the modules' parameters.

    The modules must have the same structure and parameters with a leading seed dimension (e.g. built
    from :class:`SeedLinear` with S = 1, each under its own seed). Returns a new module (S = len(modules)).
    """
    if not modules:
        raise ValueError("stack_seeds needs at least one module")
    stacked = copy.deepcopy(modules[0])
    if len(modules) == 1:
        return stacked
    params = [dict(m.named_parameters()) for m in modules]
    for name, _ in list(stacked.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = stacked.get_submodule(owner_name) if owner_name else stacked
        setattr(owner, leaf, nn.Parameter(torch.cat([p[name].detach() for p in params]), requires_grad=params[0][name].requires_grad))
    return stacked


def seed_slice(state_dict: dict[str, Tensor], s: int) -> dict[str, Tensor]:
    """Seed s of a stacked module's ``state_dict``: every entry's slice [s : s + 1], loadable into an S = 1 module."""
    return {k: v[s:s + 1].clone() for k, v in state_dict.items()}


def clip_grad_norm_per_seed(params: Iterable[Tensor], max_norm: float, n_seeds: int) -> Tensor:
    """``nn.utils.clip_grad_norm_`` per seed: each seed's gradients (slice s of every parameter) are
    scaled by min(1, max_norm / (||g_s|| + 1e-6)), ||g_s|| the global 2-norm over that seed's slices.

    Every parameter must have the seed as its leading dimension. Returns the norms (S,).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(n_seeds)
    norms = torch.stack([g.reshape(n_seeds, -1).norm(dim=1) for g in grads]).norm(dim=0)  # (S,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(n_seeds, *([1] * (g.dim() - 1))))
    return norms
