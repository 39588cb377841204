"""Seeds as a batch dimension: what S seeds in one process cost against one seed, measured in one run.

For each environment, the whole online loop (:func:`rfm_teach.train.train_seeds`: warm-up, acting,
updates, one evaluation at the end) runs with one seed and with S seeds, one after the other in this
process, and the ratio of wall times is printed: the issue's bar is S = 5 seeds in at most 2x the time
of one. Then one update alone (:meth:`rfm_teach.agent.Agent.update` on random batches, no environment)
for S = 1 and S, and the cost of S separate runs (S x one seed) beside it.

``--alignment`` also scans matrix shapes for what makes batched and separate runs differ in the last
bit: the share of products whose result changes when an operand is a view at an offset instead of an
aligned copy (see :mod:`rfm_teach.seeds`).

Usage::

    python benchmarks/seeds.py --threads 1 --seeds 5 --steps 600 --alignment
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
import torch.nn.functional as F

from rfm_teach.agent import Agent
from rfm_teach.cli import keep_freed_memory
from rfm_teach.train import make_config, train_seeds

RESULTS = Path(__file__).parent / "results"


def loop_seconds(env_id: str, algo: str, n_seeds: int, steps: int, extra: dict) -> float:
    config = make_config("tiny", env_id=env_id, total_steps=steps, eval_every=steps, checkpoint_every=None,
                         device="cpu", agent={"algo": algo, **extra})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_seeds(config, list(range(n_seeds)), tmp, progress=False)
        return time.perf_counter() - t0


def update_ms(n_seeds: int, algo: str, updates: int, obs_dim: int = 3, act_dim: int = 1) -> float:
    config = make_config("tiny", agent={"algo": algo}).agent
    agent = Agent(obs_dim, act_dim, config, seed=list(range(n_seeds)))
    g = torch.Generator().manual_seed(0)
    B = 64
    batch = {"obs": torch.randn(n_seeds, B, obs_dim, generator=g), "action": torch.rand(n_seeds, B, act_dim, generator=g) * 2 - 1,
             "reward": torch.randn(n_seeds, B, generator=g), "next_obs": torch.randn(n_seeds, B, obs_dim, generator=g),
             "mask": torch.ones(n_seeds, B)}
    for _ in range(3):
        agent.update(batch)
    t0 = time.perf_counter()
    for _ in range(updates):
        agent.update(batch)
    return 1000 * (time.perf_counter() - t0) / updates


def alignment_scan() -> dict:
    """Share of F.linear calls whose result differs between a view at an offset and its aligned copy."""
    torch.manual_seed(0)
    total = differ = 0
    for n, i, o in itertools.product([1, 5, 16, 64, 512, 2048], [1, 2, 3, 6, 17, 64, 70], [1, 2, 6, 16, 64, 256]):
        w, b, x = torch.randn(5, o, i), torch.randn(5, o), torch.randn(5, n, i)
        for s in range(5):
            total += 1
            view = F.linear(x[s], w[s], b[s])
            copy = F.linear(x[s].clone(), w[s].clone(), b[s].clone())
            differ += int(not torch.equal(view, copy))
    return {"products": total, "differ": differ}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=600, help="loop steps per run (tiny preset: 256 warm-up, then one update per step)")
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alignment", action="store_true")
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
                         + (" --alignment" if args.alignment else ""),
              "seeds": S, "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.alignment:
        result["alignment"] = alignment_scan()
        print(result["alignment"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seeds.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"`{result['command']}` ({result['date']}, torch {result['torch']}, {args.threads} thread(s)); "
             f"S = {S} seeds in one process against one seed, same run.", "",
             f"| what | one seed | {S} seeds batched | ratio (bar: <= 2) | {S} separate runs |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['one_seed_s']:.2f} | {r['batch_s']:.2f} | {r['ratio']:.2f}x | {S}.00x |")
    if args.alignment:
        a = result["alignment"]
        lines += ["", f"Alignment: {a['differ']} of {a['products']} products F.linear(view) != F.linear(aligned copy)."]
    (RESULTS / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
