"""Median effective sample size of the reverse-kernel proposal and of the policy-sample mixture, d = 1 and 6.

The target is a Gaussian with standard deviation 0.3 per coordinate (the unsquashed AnisotropicQuadratic),
K = 100 draws per noisy point, 200 points x_t from the exact marginal per t, and M = 32 exact samples of
p1 as the particles. In d = 6 the kernel's weights collapse (ESS ≈ 1) for most t; the mixture's do not.

Usage::

    python benchmarks/ess_dimension.py
"""

from __future__ import annotations

import torch

from rfm_teach.estimators import draw
from rfm_teach.paths import LinearFlow
from rfm_teach.targets import AnisotropicQuadratic, Boltzmann, exact_answers


def main() -> None:
    torch.set_num_threads(1)
    path, K, M, rows = LinearFlow(), 100, 32, 200
    print("| d | t | median ESS, kernel | median ESS, kernel + particles |\n|---|---|---|---|")
    for d in (1, 6):
        target = Boltzmann(AnisotropicQuadratic(mean=(0.0,) * d, scales=(0.3,) * d), 1.0)
        exact = exact_answers(target)
        for t in (0.1, 0.3, 0.5, 0.7, 0.9):
            g = torch.Generator().manual_seed(0)
            x_t = exact.marginal_sample(rows, t, path, g)
            particles = exact.sample(rows * M, g).reshape(rows, M, d)
            kernel = draw(target, x_t, t, path=path, K=K, generator=g, need_score=False).ess.median()
            mixture = draw(target, x_t, t, path=path, K=K, generator=g, need_score=False, prior_samples=particles).ess.median()
            print(f"| {d} | {t} | {kernel:.1f} | {mixture:.1f} |")


if __name__ == "__main__":
    main()
