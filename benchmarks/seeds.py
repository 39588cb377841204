"""Seeds as a batch dimension: what S seeds in one process cost against one seed, measured in one run.

For each environment, the whole online loop (:func:`rfm_teach.train.train_seeds`: warm-up, acting,
updates, one evaluation at the end) runs with one seed and with S seeds, one after the other in this
process, and the ratio of wall times is printed: the issue's bar is S = 5 seeds in at most 2x the time
of one. Then one update alone (:meth:`rfm_teach.agent.Agent.update` on random batches, no environment)
for S = 1 and S, and the cost of S separate runs (S x one seed) beside it.

``--profile`` also splits one RFM update's time by operator (torch.profiler, S = 1 against S): the dense
arithmetic (matrix products, GELU), whose work grows with the number of seeds, against everything else, which
batching shares. It says how far batching can go on this machine: where the arithmetic already dominates one
seed's update, S seeds cannot cost much less than S times it.

``--identity`` also scans layer shapes for whether a batch of seeds gives each seed's numbers bit for
bit: the share of shapes where S stacked SeedLinear layers give every seed the output and gradients of
its layer alone (see :mod:`rfm_teach.seeds`).

Results go to ``benchmarks/results/seeds.{json,md}`` with one thread, ``seeds_threads<N>.{json,md}`` with N.
Both sides of every ratio run with the same thread count.

Usage::

    python benchmarks/seeds.py --threads 1 --seeds 5 --steps 600 --profile --identity
    python benchmarks/seeds.py --threads 2 --seeds 5 --steps 600     # every core of a 2-core machine
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from rfm_teach.agent import Agent
from rfm_teach.cli import keep_freed_memory
from rfm_teach.results import commit_label, git_state
from rfm_teach.seeds import SeedLinear, stack_seeds
from rfm_teach.train import make_config, train_seeds

RESULTS = Path(__file__).parent / "results"


def loop_seconds(env_id: str, algo: str, n_seeds: int, steps: int, extra: dict) -> float:
    config = make_config("tiny", env_id=env_id, total_steps=steps, eval_every=steps, checkpoint_every=None,
                         device="cpu", agent={"algo": algo, **extra})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_seeds(config, list(range(n_seeds)), tmp, progress=False)
        return time.perf_counter() - t0


def _update_setup(n_seeds: int, algo: str, obs_dim: int = 3, act_dim: int = 1) -> tuple[Agent, dict]:
    """A tiny-preset agent for ``n_seeds`` seeds and one fixed random batch of 64 transitions per seed, warmed up."""
    config = make_config("tiny", agent={"algo": algo}).agent
    agent = Agent(obs_dim, act_dim, config, seed=list(range(n_seeds)))
    g = torch.Generator().manual_seed(0)
    B = 64
    batch = {"obs": torch.randn(n_seeds, B, obs_dim, generator=g), "action": torch.rand(n_seeds, B, act_dim, generator=g) * 2 - 1,
             "reward": torch.randn(n_seeds, B, generator=g), "next_obs": torch.randn(n_seeds, B, obs_dim, generator=g),
             "mask": torch.ones(n_seeds, B)}
    for _ in range(3):
        agent.update(batch)
    return agent, batch


def update_ms(n_seeds: int, algo: str, updates: int) -> float:
    agent, batch = _update_setup(n_seeds, algo)
    t0 = time.perf_counter()
    for _ in range(updates):
        agent.update(batch)
    return 1000 * (time.perf_counter() - t0) / updates


#: operator groups of the update's profile: dense arithmetic, whose work grows with the seeds, against the rest
PROFILE_GROUPS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
                  "GELU": ("aten::gelu", "aten::gelu_backward")}


def update_profile(n_seeds: int, algo: str, updates: int) -> dict[str, float]:
    """Self CPU ms per update (torch.profiler) in each of PROFILE_GROUPS and in every other operator ("rest")."""
    from torch.profiler import ProfilerActivity, profile

    agent, batch = _update_setup(n_seeds, algo)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            agent.update(batch)
    totals = dict.fromkeys([*PROFILE_GROUPS, "rest"], 0.0)
    for event in prof.key_averages():
        group = next((name for name, ops in PROFILE_GROUPS.items() if event.key in ops), "rest")
        totals[group] += event.self_cpu_time_total / 1000 / updates
    return totals


def identity_scan(n_seeds: int = 5) -> dict:
    """Share of layer shapes (rows per seed n, in, out) where a batch of S stacked SeedLinear layers gives
    every seed the output and the gradients (input, weight, bias) of its layer alone, bit for bit.

    Counted over all shapes, over those with n a multiple of 16, and over those where also in * out is a
    multiple of 16 and in > 1 (every layer of the presets' networks, whose widths are multiples of 16).
    """
    torch.manual_seed(0)
    keys = ("all", "rows_16", "rows_16_weights_16")
    counts = {key: [0, 0] for key in keys}  # [identical, total]
    for n, i, o in itertools.product([1, 5, 16, 64, 512], [1, 3, 6, 17, 64], [1, 2, 6, 16, 64]):
        layers = [SeedLinear(i, o) for _ in range(n_seeds)]
        batch = stack_seeds(layers)
        x = torch.randn(n_seeds, n, i, requires_grad=True)
        y = batch(x)
        y.pow(2).sum().backward()
        for s, layer in enumerate(layers):
            xs = x.detach()[s].clone().requires_grad_(True)
            ys = layer(xs)
            ys.pow(2).sum().backward()
            same = all(torch.equal(a, b) for a, b in ((ys, y[s]), (xs.grad, x.grad[s]),
                                                       (layer.weight.grad, batch.weight.grad[s:s + 1]),
                                                       (layer.bias.grad, batch.bias.grad[s:s + 1])))
            where = (True, n % 16 == 0, n % 16 == 0 and (i * o) % 16 == 0 and i > 1)
            for key, inside in zip(keys, where):
                if inside:
                    counts[key][0] += int(same)
                    counts[key][1] += 1
    return {key: {"identical": a, "shapes": b} for key, (a, b) in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600, help="loop steps per run (tiny preset: 256 warm-up, then one update per step)")
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="also profile one rfm update by operator group (torch.profiler), 1 seed against S")
    ap.add_argument("--identity", action="store_true", help="also scan layer shapes for bit-identical seeds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    S = args.seeds
    rows = []
    for env_id, algo, extra in (("Pendulum-v1", "rfm", {"temperature_mode": "reward_scale"}), ("Pendulum-v1", "sac", {}),
                                ("rfm_teach/ContextualBandit-v0", "rfm", {"temperature": 0.2})):
        one = loop_seconds(env_id, algo, 1, args.steps, extra)
        many = loop_seconds(env_id, algo, S, args.steps, extra)
        rows.append({"what": f"loop, {env_id}, {algo}", "one_seed_s": one, "batch_s": many, "ratio": many / one})
        print(rows[-1], flush=True)
    for algo in ("rfm", "sac"):
        one, many = update_ms(1, algo, args.updates), update_ms(S, algo, args.updates)
        rows.append({"what": f"one update, {algo} (ms)", "one_seed_s": one, "batch_s": many, "ratio": many / one})
        print(rows[-1], flush=True)
    result = {"command": f"python benchmarks/seeds.py --threads {args.threads} --seeds {S} --steps {args.steps}"
                         + (" --profile" if args.profile else "") + (" --identity" if args.identity else ""),
              "seeds": S, "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "git": git_state(exclude=RESULTS),
              "rows": rows}
    if args.profile:
        one, many = update_profile(1, "rfm", args.updates), update_profile(S, "rfm", args.updates)
        result["profile"] = {"one_seed_ms": one, "batch_ms": many}
        print(result["profile"], flush=True)
    if args.identity:
        result["identity"] = identity_scan(S)
        print(result["identity"])
    RESULTS.mkdir(exist_ok=True)
    stem = "seeds" if args.threads == 1 else f"seeds_threads{args.threads}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    commit = commit_label(result["git"])
    lines = [f"`{result['command']}` ({result['date']}, commit {commit}, torch {result['torch']}, {args.threads} thread(s)); "
             f"S = {S} seeds in one process against one seed, same run.", "",
             f"| what | one seed | {S} seeds batched | ratio (bar: <= 2) | {S} separate runs |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['one_seed_s']:.2f} | {r['batch_s']:.2f} | {r['ratio']:.2f}x | {S}.00x |")
    if args.profile:
        one, many = result["profile"]["one_seed_ms"], result["profile"]["batch_ms"]
        lines += ["", f"Where one rfm update's time goes (self CPU ms per update under torch.profiler, which adds its own "
                      f"overhead; {args.updates} updates):", "",
                  f"| operators | one seed | {S} seeds batched | ratio | share of one seed's update |", "|---|---|---|---|---|"]
        for group in one:
            lines.append(f"| {group} | {one[group]:.2f} | {many[group]:.2f} | {many[group] / one[group]:.2f}x | "
                         f"{one[group] / sum(one.values()):.0%} |")
        lines.append(f"| all | {sum(one.values()):.2f} | {sum(many.values()):.2f} | "
                     f"{sum(many.values()) / sum(one.values()):.2f}x | 100% |")
    if args.identity:
        c = result["identity"]
        lines += ["", "Bit-identical seeds (forward and backward of S stacked SeedLinear layers against each layer alone, "
                      "over layer shapes rows per seed x in x out): "
                      + "; ".join(f"{c[k]['identical']} of {c[k]['shapes']} {label}" for k, label in
                                  (("all", "shapes"), ("rows_16", "with rows per seed a multiple of 16"),
                                   ("rows_16_weights_16", "with also in x out a multiple of 16 and in > 1 "
                                                          "(every layer of the presets)")))
                      + "."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
