"""Benchmark the posterior-mean estimators against exact answers, and time one batched estimate.

For each target, each t in {0.02, 0.05, 0.10, ..., 0.95, 0.98} and each K in {16, 64, 256}: draw x_t
from the exact marginal p_t, estimate mu1 = E[x1 | x_t] with every estimator FROM THE SAME DRAWS (a
paired comparison; the particle runs reuse the same kernel noise, common random numbers), and score it
with :mod:`rfm_teach.scoring`: MSE against the exact mu1, next to the error of one exact posterior draw
(E tr Cov(x1 | x_t)) and of the constant guess E_p1[x1].

Estimators: the four kernel-only ones (none, gradient, plugin, auto: the paper's proposal), auto with
each of its four gates switched off in turn and auto with ridge 0 instead of the paper's 1e-4 (the
ablation), and auto with the policy-proposal mixture built from M = 32 exact samples of p1 ("particles")
or of the same landscape at twice the temperature ("particles_wrong"). Targets: the 2D toys the gates
were tuned on (ring, two moons, quadratic, squashed ring) and targets they were not (two moons at
temperature 0.3, a d = 6 Gaussian, a d = 6 product of two- and three-bump factors, the same squashed).

Then time one batched estimate at B = 256, K = 100, d = 6 with a 2x256 MLP twin critic, as a ratio to one
SAC critic+actor update and to the dense-matmul time of the same FLOPs, measured in the same run.

Usage::

    python benchmarks/estimators.py                 # full grid, 20 x 20 estimates per cell (~15 min on one thread), writes benchmarks/results/
    python benchmarks/estimators.py --quick         # a coarse grid for a smoke check (~1 min)
    python benchmarks/estimators.py --update-readme # also rewrite the generated block in README.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from rfm_teach import plotting
from rfm_teach.agent import Agent, AgentConfig, TwinCritic
from rfm_teach.estimators import (
    AUTO_GATES,
    auto_coefficient,
    coefficient_upper_end,
    combine,
    draw,
    gradient_expectation,
    noise_expectation,
    plugin_coefficient,
    posterior_mean,
)
from rfm_teach.paths import LinearFlow
from rfm_teach.results import commit_label, git_state
from rfm_teach.scoring import score_estimator
from rfm_teach.targets import (
    AnisotropicQuadratic,
    Boltzmann,
    ProductLandscape,
    RingOfModes,
    TwoMoons,
    exact_answers,
    make_toy,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
ESTIMATORS = ("none", "gradient", "plugin", "auto")
ABLATION = tuple(f"auto_no_{gate}" for gate in sorted(AUTO_GATES))
#: Errors below this fraction of one exact draw are negligible (a Gaussian posterior with the right c is
#: estimated to float64 round-off, 1e-30): a ratio of two such errors compares noise, so every ratio floors
#: both errors at it.
ROUNDOFF = 1e-12
#: The flow times of the grid: 0.05 steps, and the two ends the issue names.
T_GRID = (0.02, *(round(0.05 * i, 2) for i in range(1, 20)), 0.98)
PARTICLES = ("particles", "particles_wrong")
#: The same particles with the shares of MIXTURE in every row (adaptive=False): what the adaptive kernel share changes.
FIXED = ("particles_fixed", "particles_wrong_fixed")
PATH = LinearFlow()
M_PARTICLES = 32


def _gauss6():
    return AnisotropicQuadratic(mean=(0.0,) * 6, scales=(0.3,) * 6)


# (name, landscape, temperature, squash, tuned on it?). The squashed ring is the setting of the RL loop
# (tanh-latent actions, Jacobian in the weights) at a sharper temperature.
TARGETS = [
    ("ring", lambda: make_toy("ring"), 1.0, False, True),
    ("two_moons", lambda: make_toy("two_moons"), 1.0, False, True),
    ("quadratic", lambda: make_toy("quadratic"), 1.0, False, True),
    ("ring_tanh", lambda: make_toy("ring"), 0.3, True, True),
    ("two_moons_cold", lambda: make_toy("two_moons"), 0.3, False, False),
    ("gauss6", _gauss6, 1.0, False, False),
    ("product6", lambda: ProductLandscape.bimodal(6), 1.0, False, False),
    ("product6_tanh", lambda: ProductLandscape.bimodal(6), 0.3, True, False),
]


def _exact(landscape, temperature: float, squash: bool):
    target = Boltzmann(landscape, temperature, squash=squash)
    options = {"n": 301} if isinstance(landscape, (RingOfModes, TwoMoons)) else {}  # 2D grid quadrature
    return target, exact_answers(target, **options)


def crossfit_coefficient(draws) -> torch.Tensor:
    """A derived alternative to auto's gates, measured here and not shipped. (B, d).

    The plug-in c (projected as in auto, onto [0, coefficient_upper_end]) is kept in dimension j only where,
    on each half of the draws (even and odd), the coefficient estimated on the other half lowers the
    delta-method variance of that half's estimate, Σ_k w_k^2 (y_kj - ȳ_j)^2 with y = x1 + c s1; else c_j = 0.
    No threshold is tuned.
    """
    upper = coefficient_upper_end(draws)

    def projected(d):
        return torch.minimum(plugin_coefficient(d).clamp_min(0.0), upper)

    def variance(d, c):
        y = d.x1 + c[:, None] * d.score
        centre = torch.einsum("bk,bkd->bd", d.w, y)
        return torch.einsum("bk,bkd->bd", d.w**2, (y - centre[:, None]) ** 2)

    idx = torch.arange(draws.x1.shape[1])
    even, odd = draws.subset(idx[0::2]), draws.subset(idx[1::2])
    zero = torch.zeros_like(upper)
    keep = (variance(odd, projected(even)) < variance(odd, zero)) & (variance(even, projected(odd)) < variance(even, zero))
    return projected(draws) * keep.to(upper.dtype)


def estimates(draws, ablation: bool = True) -> dict[str, torch.Tensor]:
    """The kernel-only estimators, the ablation of auto and its derived alternative, all from the same draws, (B, d) each.

    ``ablation=False`` keeps only none, gradient, plugin and auto.
    """
    out = {
        "none": noise_expectation(draws),
        "gradient": gradient_expectation(draws),
        "plugin": combine(draws, plugin_coefficient(draws)),
        "auto": combine(draws, auto_coefficient(draws)),
    }
    if not ablation:
        return out
    out["crossfit"] = combine(draws, crossfit_coefficient(draws))
    for gate in sorted(AUTO_GATES):
        out[f"auto_no_{gate}"] = combine(draws, auto_coefficient(draws, gates=AUTO_GATES - {gate}))
    out["auto_ridge0"] = combine(draws, auto_coefficient(draws, ridge=0.0))
    out["auto_upper_v"] = combine(draws, auto_coefficient(draws, upper_z=0.0))
    return out


def cell_estimates(target, exact, exact_wrong, K: int, x: torch.Tensor, t: float, gen: torch.Generator,
                   ablation: bool = True) -> tuple[dict[str, torch.Tensor], float]:
    """Every estimator of one cell at the points x (n, d), all from the same draws; and the kernel draws' median ESS.

    The kernel-only estimators share one set of kernel draws; the particle runs (M_PARTICLES samples of
    ``exact`` or of ``exact_wrong`` per row, adaptive and fixed shares) restart the generator from the
    same state, so they reuse that kernel noise (common random numbers).
    """
    n = x.shape[0]
    state = gen.get_state()
    kernel_draws = draw(target, x, t, path=PATH, K=K, generator=gen)
    out = estimates(kernel_draws, ablation)
    for key, source in (("particles", exact), ("particles_wrong", exact_wrong)):
        prior = source.sample(n * M_PARTICLES, gen).reshape(n, M_PARTICLES, -1)
        for adaptive, name in ((True, key), (False, key + "_fixed")):
            paired = torch.Generator().set_state(state)
            out[name] = posterior_mean(target, x, t, path=PATH, K=K, generator=paired, prior_samples=prior,
                                       adaptive=adaptive).mean
    return out, float(kernel_draws.ess.median())


def ratio(a: float, b: float, one_draw: float) -> float:
    """a / b with both errors floored at ROUNDOFF x one exact draw (the error of one exact posterior draw)."""
    floor = ROUNDOFF * one_draw
    return max(a, floor) / max(b, floor)


def accuracy(ts, Ks, rows, reps, seed, targets=TARGETS) -> list[dict]:
    """Scores against exact answers for every (target, t, K); rows x reps estimates per cell."""
    records = []
    for name, make, temperature, squash, tuned in targets:
        target, exact = _exact(make(), temperature, squash)
        _, exact_wrong = _exact(make(), 2 * temperature, squash)
        g = torch.Generator().manual_seed(seed)
        for t in ts:
            for K in Ks:
                ess = []

                def run(x, tt, gen):
                    out, median_ess = cell_estimates(target, exact, exact_wrong, K, x, tt, gen)
                    ess.append(median_ess)
                    return out

                scores = score_estimator(run, exact, t, path=PATH, rows=rows, reps=reps, generator=g)
                mse = {k: v["x1"].mse for k, v in scores.items()}
                ref = scores["auto"]["x1"]
                best_other = min(mse["none"], mse["gradient"], mse["plugin"])
                record = {"target": name, "tuned_on": int(tuned), "t": round(t, 2), "K": K, **mse, "ess_median": ess[0],
                          "one_draw": ref.posterior_var, "constant": ref.constant_mse,
                          "auto_bias2": ref.bias2, "particles_bias2": scores["particles"]["x1"].bias2,
                          "auto_over_best": ratio(mse["auto"], best_other, ref.posterior_var)}
                records.append(record)
                print(f"{name:14s} t={t:.2f} K={K:3d} one_draw={record['one_draw']:.3g} "
                      + " ".join(f"{k}={mse[k]:.3g}" for k in (*ESTIMATORS, *PARTICLES))
                      + f"  auto/best={record['auto_over_best']:.2f}", flush=True)
    return records


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timing(repeats: int) -> dict:
    """One batched estimate (B=256, K=100, d=6, twin 2x256 critic) vs one SAC update and vs dense matmul.

    Cost model: K Q-evaluations per row for every cv, plus K Q-gradients (one backward pass) unless
    cv = "none". The critic's forward pass costs 2 x (in x 256 + 256 x 256 + 256) x 2 multiply-adds per
    action (two critics), and a backward pass about twice that. The matmul baseline multiplies two
    square float32 matrices in the same run and converts the same FLOP count into seconds.
    """
    gen = torch.Generator().manual_seed(0)
    B, K, M, obs_dim, act_dim, hidden = 256, 100, M_PARTICLES, 17, 6, 256
    critic = TwinCritic(obs_dim, act_dim, hidden)
    obs = torch.randn(B, obs_dim, generator=gen)

    def q(a):
        return critic.q_min(obs[:, None, :].expand(-1, a.shape[1], -1), a)

    target = Boltzmann(q, 0.02, squash=True)
    x_t = torch.randn(B, act_dim, generator=gen)
    t = torch.rand(B, generator=gen) * 0.98 + 0.01
    prior = torch.randn(B, M, act_dim, generator=gen)
    agent = Agent(obs_dim, act_dim, AgentConfig(algo="sac"))
    batch = {"obs": obs, "action": torch.rand(B, act_dim, generator=gen) * 2 - 1, "reward": torch.randn(B, generator=gen),
             "next_obs": torch.randn(B, obs_dim, generator=gen), "mask": torch.ones(B)}
    n = 1024
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    matmul_s = _best_of(lambda: a @ b, repeats)
    flops_per_s = 2 * n**3 / matmul_s
    forward = 2 * 2 * ((obs_dim + act_dim) * hidden + hidden * hidden + hidden)  # FLOPs per action, two critics
    out = {"sac_update_s": _best_of(lambda: agent.update(batch), repeats), "matmul_gflops": flops_per_s / 1e9,
           "q_evaluations_per_estimate": B * K, "q_gradients_per_estimate": B * K}
    for name, kwargs, grad in (("none", {"cv": "none"}, False), ("auto", {"cv": "auto"}, True),
                               ("particles", {"cv": "auto", "prior_samples": prior}, True)):
        seconds = _best_of(lambda kw=kwargs: posterior_mean(target, x_t, t, K=K, **kw), repeats)
        flops = B * K * forward * (3 if grad else 1)
        out[f"estimate_{name}_s"] = seconds
        out[f"ratio_{name}_to_sac"] = seconds / out["sac_update_s"]
        out[f"ratio_{name}_to_matmul"] = seconds / (flops / flops_per_s)
    out["torch_threads"] = torch.get_num_threads()
    return out


COLUMNS = (*ESTIMATORS, *PARTICLES)


def markdown_tables(records: list[dict], ts) -> str:
    lines = []
    for name, *_, tuned in TARGETS:
        if not any(r["target"] == name for r in records):
            continue
        lines += [f"### {name}" + ("" if tuned else " (not used to tune auto)"), "",
                  "MSE of mu1 divided by the error of one exact posterior draw, E tr Cov(x1 | x_t) (below 1 is better "
                  "than one exact draw); the constant guess E_p1[x1] on the same scale; median ESS of the kernel draws.",
                  ""]
        Ks = sorted({r["K"] for r in records if r["target"] == name})
        head = "| t | constant | " + " | ".join(
            f"K={K}: none / grad / plugin / **auto** / particles / wrong (ESS)" for K in Ks) + " |"
        lines += [head, "|" + "---|" * (2 + len(Ks))]
        for t in ts:
            cells = []
            rs = [next(r for r in records if r["target"] == name and r["t"] == round(t, 2) and r["K"] == K) for K in Ks]
            for r in rs:
                vals = [f"{r[k] / r['one_draw']:.2g}" for k in COLUMNS]
                vals[3] = f"**{vals[3]}**"
                cells.append(" / ".join(vals) + f" ({r['ess_median']:.1f})")
            lines.append(f"| {t:.2f} | {rs[0]['constant'] / rs[0]['one_draw']:.2g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(records: list[dict]) -> str:
    """The generated summary: every line a statistic of the CSV (tests recompute it)."""

    def cells(rs, limit):
        return ", ".join(f"{r['target']} t={r['t']:.2f} K={r['K']} ({r['auto_over_best']:.2f}x)" for r in rs[:limit])

    tuned = [r for r in records if r["tuned_on"]]
    fresh = [r for r in records if not r["tuned_on"]]
    text = []
    for label, rs in (("tuned on", tuned), ("not tuned on", fresh)):
        ratios = sorted(r["auto_over_best"] for r in rs)
        worse = sorted((r for r in rs if r["auto_over_best"] > 1.25), key=lambda r: -r["auto_over_best"])
        text.append(f"- kernel-only auto / best-of(none, gradient, plugin), {len(rs)} cells on targets it was {label}: "
                    f"median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f}; {len(worse)} cells above 1.25"
                    + (f" (worst: {cells(worse, 4)})" if worse else ""))
    plugin_loses = [r for r in records if r["plugin"] > r["none"] and r["t"] <= 0.5]
    small_t = [r for r in records if r["t"] <= 0.5]
    text.append(f"- cells with t <= 0.5 where the paper's plug-in c loses to plain c = 0: {len(plugin_loses)} of {len(small_t)}")
    def vs_auto(r, key):
        return ratio(r[key], r["auto"], r["one_draw"])

    def over_cells(key):  # "geometric mean / max" of key / auto over all cells
        values = [vs_auto(r, key) for r in records]
        return f"{_geomean(values):.2f} / {max(values):.2f}"

    abl = ", ".join(f"{k.removeprefix('auto_no_')} {over_cells(k)}" for k in ABLATION)
    text.append(f"- ablation, auto with one gate off / auto (geometric mean / max over all cells): {abl}; auto with "
                f"ridge 0 instead of 1e-4 / auto: {over_cells('auto_ridge0')} (in every ratio an error below "
                f"{ROUNDOFF:g} of one exact draw counts as that floor)")
    point_worse = sorted((r for r in records if ratio(r["auto_upper_v"], min(r["none"], r["gradient"], r["plugin"]),
                                                      r["one_draw"]) > 1.25), key=lambda r: (r["target"], r["t"], r["K"]))
    text.append(f"- auto with the upper end V itself (earlier versions) instead of its upper confidence end / auto: "
                f"{over_cells('auto_upper_v')}; its cells above 1.25x best-of: {len(point_worse)}"
                + (" (" + ", ".join(f"{r['target']} t={r['t']:.2f} K={r['K']}" for r in point_worse[:6]) + ")" if point_worse else ""))
    crossfit_worse = sum(ratio(r["crossfit"], min(r["none"], r["gradient"], r["plugin"]), r["one_draw"]) > 1.25
                         for r in records)
    text.append(f"- derived alternative without tuned thresholds (crossfit: c kept where the other half's c lowers the "
                f"held-out delta-method variance) / auto: geometric mean {_geomean(vs_auto(r, 'crossfit') for r in records):.2f}, "
                f"max {max(vs_auto(r, 'crossfit') for r in records):.2f}; cells above 1.25x best-of: crossfit "
                f"{crossfit_worse}, auto {sum(r['auto_over_best'] > 1.25 for r in records)} of {len(records)}")
    k64 = [r for r in records if r["K"] == 64]
    for key, label in (("particles", f"{M_PARTICLES} exact samples of p1"),
                       ("particles_wrong", f"{M_PARTICLES} samples at twice the temperature"),
                       ("particles_fixed", f"fixed shares, {M_PARTICLES} exact samples of p1"),
                       ("particles_wrong_fixed", f"fixed shares, {M_PARTICLES} samples at twice the temperature")):
        over = max(k64, key=lambda r: r[key] / r["one_draw"])
        late = [r for r in k64 if r["t"] >= 0.7]
        worst = max(late, key=lambda r: vs_auto(r, key))
        text.append(f"- auto with the policy-sample proposal ({label}), K=64: MSE / one exact draw at most "
                    f"{over[key] / over['one_draw']:.2f} ({over['target']} t={over['t']:.2f}; kernel-only auto there: "
                    f"{over['auto'] / over['one_draw']:.3g}); at t >= 0.7 at most {vs_auto(worst, key):.2f}x "
                    f"kernel-only auto ({worst['target']} t={worst['t']:.2f})")
    for key, label in (("particles", "exact samples"), ("particles_wrong", "samples at twice the temperature")):
        def vs_fixed(r):
            return ratio(r[key], r[key + "_fixed"], r["one_draw"])

        parts = []
        for name, rs in (("t < 0.5", [r for r in k64 if r["t"] < 0.5]), ("t >= 0.5", [r for r in k64 if r["t"] >= 0.5])):
            worst = max(rs, key=vs_fixed)
            parts.append(f"{name}: geometric mean {_geomean(vs_fixed(r) for r in rs):.2f}, max {vs_fixed(worst):.2f} "
                         f"({worst['target']} t={worst['t']:.2f})")
        text.append(f"- adaptive kernel share / fixed shares ({M_PARTICLES} {label}), K=64, " + "; ".join(parts))
    return "\n".join(text)


def figure(records: list[dict], path: Path) -> None:
    """MSE / one exact draw vs t at K = 64, one panel per target, with the constant guess dashed."""
    plotting.set_style()
    names = [t[0] for t in TARGETS if any(r["target"] == t[0] for r in records)]
    cols = 4
    rows_ = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.4 * cols, 3.0 * rows_), sharex=True, squeeze=False)
    K = 64 if any(r["K"] == 64 for r in records) else max(r["K"] for r in records)
    for ax, name in zip(axes.flat, names):
        rs = sorted((r for r in records if r["target"] == name and r["K"] == K), key=lambda r: r["t"])
        ts = [r["t"] for r in rs]
        for est in ("none", "plugin", "auto"):
            ax.semilogy(ts, [max(r[est] / r["one_draw"], ROUNDOFF) for r in rs], **plotting.style_of(est))
        ax.semilogy(ts, [max(r["particles"] / r["one_draw"], ROUNDOFF) for r in rs], color="black", lw=2, label="auto + particles")
        ax.semilogy(ts, [r["constant"] / r["one_draw"] for r in rs], color="grey", ls="--", lw=1.5, label="constant guess")
        ax.axhline(1.0, color="grey", lw=1, ls=":")
        ax.text(0.03, 0.05, name, transform=ax.transAxes, fontsize=10)
        ax.set_xlabel("t (flow time)")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"MSE / one exact draw (K={K})")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(block: str, marker: str = "estimator-benchmark") -> None:
    """Replace what README.md holds between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` by ``block``."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {marker}:start/end --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="coarse grid (t in 0.1, 0.5, 0.9; K in 16, 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=20, help="x_t points per cell")
    parser.add_argument("--reps", type=int, default=20, help="estimates per x_t")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small networks run fastest on 1)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)  # exact comparisons in float64 (DESIGN.md)
    ts = [0.1, 0.5, 0.9] if args.quick else list(T_GRID)
    Ks = [16, 64] if args.quick else [16, 64, 256]
    start = time.time()
    records = accuracy(ts, Ks, args.rows, args.reps, args.seed)
    torch.set_default_dtype(torch.float32)  # timing in the training precision
    times = timing(repeats=5 if args.quick else 20)
    print(json.dumps(times, indent=2))
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "estimators_quick" if args.quick else "estimators"
    with open(OUT / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    figure(records, OUT / f"{stem}.png")
    command = "python benchmarks/estimators.py" + (" --quick" if args.quick else "") + f" --seed {args.seed} --threads {args.threads} --rows {args.rows} --reps {args.reps}"
    git = git_state(exclude=OUT)  # the files this run just wrote do not make the tree dirty
    commit, dirty = (git["commit"] or "unknown")[:7], bool(git["dirty"])
    block = "\n".join([
        f"Generated by `{command}` (commit {commit_label(git)}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.time() - start:.0f} s). "
        f"{args.rows} x_t per cell from the exact marginal, {args.reps} estimates each, all estimators on the same draws.",
        "",
        summary(records),
        f"- one batched estimate (B=256, K=100, d=6, twin 2x256 critic; {times['q_evaluations_per_estimate']} "
        f"Q-evaluations and as many Q-gradients, none: no gradients): auto {times['estimate_auto_s'] * 1e3:.1f} ms, "
        f"auto + particles {times['estimate_particles_s'] * 1e3:.1f} ms, none {times['estimate_none_s'] * 1e3:.1f} ms; "
        f"one SAC critic+actor update {times['sac_update_s'] * 1e3:.1f} ms; ratio to the SAC update: auto "
        f"{times['ratio_auto_to_sac']:.1f}x, auto + particles {times['ratio_particles_to_sac']:.1f}x, none "
        f"{times['ratio_none_to_sac']:.1f}x; ratio to dense matmul of the same FLOPs "
        f"({times['matmul_gflops']:.0f} GFLOP/s): auto {times['ratio_auto_to_matmul']:.1f}x, auto + particles "
        f"{times['ratio_particles_to_matmul']:.1f}x, none {times['ratio_none_to_matmul']:.1f}x",
        "",
        f"Full table: `benchmarks/results/{stem}.md`; figure: `benchmarks/results/{stem}.png`.",
    ])
    (OUT / f"{stem}.md").write_text("## Estimator error against exact answers\n\n" + block + "\n\n" + markdown_tables(records, ts))
    (OUT / f"{stem}_timing.json").write_text(json.dumps({"command": command, "commit": commit, "dirty": dirty, **times},
                                                        indent=2))
    print(block)
    if args.update_readme:
        update_readme(block)


if __name__ == "__main__":
    sys.exit(main())
