"""Benchmark the posterior-mean estimators against exact answers, and time one batched estimate.

For each 2D toy target, each t in {0.05, 0.10, ..., 0.95} and each K in {16, 64, 256}: draw x_t from the
exact marginal p_t, estimate mu1 = E[x1 | x_t] with every estimator FROM THE SAME DRAWS (a paired
comparison), and report the mean squared error against the exact mu1 (grid quadrature, or the closed
form for the quadratic toy), the median ESS, and the ratio of "auto" to the best of the other three.

Then time one batched estimate at B = 256, K = 100, d = 6 with a 2x256 MLP twin critic and report it
as a ratio to one SAC critic+actor update (the same harness's ``Agent(algo="sac").update``) measured in
the same run.

Usage::

    python benchmarks/estimators.py                 # full grid (~10 min on 2 CPU cores), writes benchmarks/results/
    python benchmarks/estimators.py --quick         # a coarse grid for a smoke check (~1 min)
    python benchmarks/estimators.py --update-readme # also rewrite the generated table in README.md
"""

from __future__ import annotations

import argparse
import csv
import json
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
    auto_coefficient,
    combine,
    draw,
    gradient_expectation,
    noise_expectation,
    plugin_coefficient,
    posterior_mean,
)
from rfm_teach.paths import LinearFlow
from rfm_teach.results import git_state
from rfm_teach.targets import AnisotropicQuadratic, Boltzmann, ExactGrid, make_toy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
ESTIMATORS = ("none", "gradient", "plugin", "auto")
PATH = LinearFlow()

# (name, toy, temperature, squash, grid extent, grid points per axis). The squashed ring is the
# setting of the RL loop (tanh-latent actions, Jacobian in the weights) at a sharper temperature.
TARGETS = [
    ("ring", "ring", 1.0, False, 1.5, 301),
    ("two_moons", "two_moons", 1.0, False, 1.5, 301),
    ("quadratic", "quadratic", 1.0, False, None, None),
    ("ring_tanh", "ring", 0.3, True, 3.0, 401),
]


def estimates(draws) -> dict[str, torch.Tensor]:
    """All four estimators from the same draws (B, d) each."""
    return {
        "none": noise_expectation(draws),
        "gradient": gradient_expectation(draws),
        "plugin": combine(draws, plugin_coefficient(draws)),
        "auto": combine(draws, auto_coefficient(draws)),
    }


def accuracy(ts, Ks, rows, reps, seed) -> list[dict]:
    """MSE against exact answers for every (target, t, K); rows x reps estimates per cell."""
    records = []
    for name, toy_name, temperature, squash, extent, n in TARGETS:
        toy = make_toy(toy_name)
        target = Boltzmann(toy, temperature, squash=squash)
        grid = ExactGrid(target, extent=extent or toy.extent, n=n or 401)
        g = torch.Generator().manual_seed(seed)
        for t in ts:
            x_t = grid.marginal_sample(rows, t, PATH, g)
            if isinstance(toy, AnisotropicQuadratic):  # closed form: no quadrature error at all
                exact = toy.posterior(x_t, t, PATH, temperature)[0]
            else:
                exact = grid.posterior_mean(x_t, t, PATH)
            x_rep, exact_rep = x_t.repeat_interleave(reps, 0), exact.repeat_interleave(reps, 0)
            for K in Ks:
                d = draw(target, x_rep, t, path=PATH, K=K, generator=g)
                errs = {k: ((v - exact_rep) ** 2).sum(-1).mean().item() for k, v in estimates(d).items()}
                best_other = min(errs["none"], errs["gradient"], errs["plugin"])
                records.append({"target": name, "t": round(t, 2), "K": K, **errs,
                                "ess_median": d.ess.median().item(), "auto_over_best": errs["auto"] / best_other})
                print(f"{name:10s} t={t:.2f} K={K:3d} ESS={records[-1]['ess_median']:6.1f} "
                      + " ".join(f"{k}={errs[k]:.3g}" for k in ESTIMATORS)
                      + f"  auto/best={records[-1]['auto_over_best']:.2f}", flush=True)
    return records


def timing(repeats: int) -> dict:
    """Seconds for one batched estimate (B=256, K=100, d=6, twin 2x256 critic) vs one SAC update."""
    torch.manual_seed(0)
    B, K, obs_dim, act_dim = 256, 100, 17, 6
    critic = TwinCritic(obs_dim, act_dim)
    obs = torch.randn(B, obs_dim)

    def q(a):
        return critic.q_min(obs[:, None, :].expand(-1, a.shape[1], -1), a)

    target = Boltzmann(q, 0.02, squash=True)
    x_t = torch.randn(B, act_dim)
    t = torch.rand(B) * 0.98 + 0.01
    agent = Agent(obs_dim, act_dim, AgentConfig(algo="sac"))
    batch = {"obs": obs, "action": torch.rand(B, act_dim) * 2 - 1, "reward": torch.randn(B),
             "next_obs": torch.randn(B, obs_dim), "mask": torch.ones(B)}

    def best_of(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    out = {"sac_update_s": best_of(lambda: agent.update(batch))}
    for cv in ("none", "auto"):
        out[f"estimate_{cv}_s"] = best_of(lambda cv=cv: posterior_mean(target, x_t, t, K=K, cv=cv))
    out["ratio_auto_to_sac"] = out["estimate_auto_s"] / out["sac_update_s"]
    out["ratio_none_to_sac"] = out["estimate_none_s"] / out["sac_update_s"]
    out["torch_threads"] = torch.get_num_threads()
    return out


def markdown_tables(records: list[dict], ts) -> str:
    lines = []
    for name, *_ in TARGETS:
        lines += [f"### {name}", "", "MSE of mu1 against the exact answer; ESS median; ratio auto / best of the others.", ""]
        Ks = sorted({r["K"] for r in records if r["target"] == name})
        head = "| t | " + " | ".join(f"K={K}: none / grad / plugin / **auto** (ESS) | auto/best" for K in Ks) + " |"
        lines += [head, "|" + "---|" * (1 + 2 * len(Ks))]
        for t in ts:
            cells = []
            for K in Ks:
                r = next(r for r in records if r["target"] == name and r["t"] == round(t, 2) and r["K"] == K)
                cells.append(f"{r['none']:.2g} / {r['gradient']:.2g} / {r['plugin']:.2g} / **{r['auto']:.2g}** "
                             f"({r['ess_median']:.1f}) | {r['auto_over_best']:.2f}")
            lines.append(f"| {t:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    ratios = [r["auto_over_best"] for r in records]
    worse = [r for r in records if r["auto_over_best"] > 1.1]
    plugin_loses = [r for r in records if r["plugin"] > r["none"] and r["t"] <= 0.5]
    small_t = [r for r in records if r["t"] <= 0.5]
    text = [
        f"- cells (target x t x K): {len(records)}; auto / best-of(none, gradient, plugin): "
        f"median {sorted(ratios)[len(ratios) // 2]:.2f}, max {max(ratios):.2f}",
        f"- cells where auto is more than 10% worse than the best of the others: {len(worse)}"
        + (": " + ", ".join(f"{r['target']} t={r['t']:.2f} K={r['K']} ({r['auto_over_best']:.2f}x)" for r in worse)
           if worse else ""),
        f"- cells with t <= 0.5 where the paper's plug-in c loses to plain c = 0: {len(plugin_loses)} of {len(small_t)}",
    ]
    return "\n".join(text)


def figure(records: list[dict], path: Path) -> None:
    plotting.set_style()
    names = [t[0] for t in TARGETS]
    Ks = sorted({r["K"] for r in records})
    fig, axes = plt.subplots(len(Ks), len(names), figsize=(3.2 * len(names), 2.6 * len(Ks)), sharex=True,
                             squeeze=False)
    for i, K in enumerate(Ks):
        for j, name in enumerate(names):
            ax = axes[i][j]
            rs = sorted((r for r in records if r["target"] == name and r["K"] == K), key=lambda r: r["t"])
            for est in ESTIMATORS:
                ax.semilogy([r["t"] for r in rs], [r[est] for r in rs], **plotting.style_of(est))
            ax.text(0.03, 0.05, f"{name}, K={K}", transform=ax.transAxes, fontsize=9)
            if i == len(Ks) - 1:
                ax.set_xlabel("t (flow time)")
            if j == 0:
                ax.set_ylabel("MSE of μ₁")
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(block: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- estimator-benchmark:start -->\n).*?(<!-- estimator-benchmark:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit("README.md has no <!-- estimator-benchmark:start/end --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="coarse grid (t in 0.1, 0.5, 0.9; K in 16, 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=20, help="x_t points per cell")
    parser.add_argument("--reps", type=int, default=20, help="estimates per x_t")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)  # exact comparisons in float64 (DESIGN.md)
    ts = [0.1, 0.5, 0.9] if args.quick else [round(0.05 * i, 2) for i in range(1, 20)]
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
    command = "python benchmarks/estimators.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}"
    git = git_state(exclude=OUT)  # the files this run just wrote do not make the tree dirty
    commit, dirty = (git["commit"] or "unknown")[:7], bool(git["dirty"])
    block = "\n".join([
        f"Generated by `{command}` (commit {commit}{'+dirty' if dirty else ''}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.time() - start:.0f} s). "
        f"{args.rows} x_t per cell from the exact marginal, {args.reps} estimates each, all estimators on the same draws.",
        "",
        summary(records),
        f"- one batched estimate (B=256, K=100, d=6, twin 2x256 critic): auto {times['estimate_auto_s'] * 1e3:.1f} ms, "
        f"none {times['estimate_none_s'] * 1e3:.1f} ms; one SAC critic+actor update {times['sac_update_s'] * 1e3:.1f} ms; "
        f"ratio auto / SAC update = {times['ratio_auto_to_sac']:.1f}x (none / SAC = {times['ratio_none_to_sac']:.1f}x)",
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
