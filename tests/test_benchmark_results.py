"""The committed estimator benchmark is consistent: README and results page restate the CSV, never a typed number."""

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark_estimators", ROOT / "benchmarks" / "estimators.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records() -> list[dict]:
    with open(RESULTS / "estimators.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v if k == "target" else int(v) if k in ("K", "tuned_on") else float(v) for k, v in row.items()}
            for row in rows]


def test_benchmark_covers_the_grid_the_issue_asks_for():
    bench, records = _benchmark_module(), _records()
    ts = sorted({r["t"] for r in records})
    assert ts == list(bench.T_GRID) and ts[0] == 0.02 and ts[-1] == 0.98
    assert sorted({r["K"] for r in records}) == [16, 64, 256]
    assert len(records) == len({r["target"] for r in records}) * len(ts) * 3
    assert {r["target"] for r in records if not r["tuned_on"]}, "no target outside the tuning set"
    for r in records:  # the ratio column is what it says it is (errors floored at round-off)
        best = min(r["none"], r["gradient"], r["plugin"])
        floor = bench.ROUNDOFF * r["one_draw"]
        assert abs(r["auto_over_best"] - max(r["auto"], floor) / max(best, floor)) <= 1e-9 * r["auto_over_best"]


def test_readme_and_results_page_restate_the_csv():
    summary = _benchmark_module().summary(_records())
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- estimator-benchmark:start -->")[1].split("<!-- estimator-benchmark:end -->")[0]
    assert summary in block
    assert summary in (RESULTS / "estimators.md").read_text()


def test_readme_restates_the_seed_benchmark():
    """The README's batched-seed ratios are the ones benchmarks/seeds.py wrote, not typed numbers."""
    import json

    readme = (ROOT / "README.md").read_text()
    for name in ("seeds.json", "seeds_threads2.json"):
        result = json.loads((RESULTS / name).read_text())
        assert result["command"] in readme
        ratios = {r["what"]: r["ratio"] for r in result["rows"]}
        for what in ("loop, rfm_teach/ContextualBandit-v0, rfm", "loop, Pendulum-v1, sac", "loop, Pendulum-v1, rfm"):
            assert f"{ratios[what]:.2f}x" in readme, (name, what)


@pytest.mark.parametrize(("K", "targets"), [(64, []), (16, []), (16, ["product6", "product6_tanh"]), (16, ["ring_tanh"])])
def test_readme_restates_the_pooled_large_t_check(K, targets):
    """benchmarks/estimators_late.py: the README block is the summary of the committed CSV, and every ratio
    column is the ratio of the pooled MSEs it names (floored at round-off)."""
    spec = importlib.util.spec_from_file_location("benchmark_estimators_late", ROOT / "benchmarks" / "estimators_late.py")
    late = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(late)
    stem = late.result_stem(K, targets)
    with open(RESULTS / f"{stem}.csv", newline="") as f:
        records = [{k: v if k in ("target", "best") else int(v) if k in ("K", "tuned_on", "estimates") else float(v)
                    for k, v in row.items()} for row in csv.DictReader(f)]
    assert {r["t"] for r in records} == set(late.T_LATE) and min(late.T_LATE) == 0.7
    names = targets or [name for name, *_ in late.bench.TARGETS]
    assert len(records) == len(names) * len(late.T_LATE) and {r["target"] for r in records} == set(names)
    assert {r["K"] for r in records} == {K}
    for r in records:
        floor = late.bench.ROUNDOFF * r["one_draw"]
        for column, num, den in late.RATIOS:
            expected = max(r[f"mse_{num}" if num != "best" else f"mse_{r['best']}"], floor) / max(
                r[f"mse_{den}" if den != "best" else f"mse_{r['best']}"], floor)
            assert abs(r[column] - expected) <= 1e-9 * expected
            assert r[f"{column}_lo"] <= r[f"{column}_hi"]
    marker = late.readme_marker(stem)
    block = (ROOT / "README.md").read_text().split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    assert late.summary(records) in block
