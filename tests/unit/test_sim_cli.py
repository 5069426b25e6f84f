"""sealpool-sim: the advisor's suggestion improves the bottleneck it names; the CLI's
--json, --plots and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from broker_topology.messages import Phase
from miner_publisher.ratio import kind_name
from sealpool_sim.advice import advice_for, follow
from sealpool_sim.cli import main
from sealpool_sim.engine import simulate
from sealpool_sim.metrics import measure
from sealpool_sim.scenario import Arrivals, resolve


def test_following_the_ratio_advice_improves_the_bottleneck_it_names() -> None:
    spec = resolve("seed-003").model_copy(update={"arrivals": Arrivals(backlog=400)})
    before = simulate(spec)
    advice = advice_for(spec, before)
    assert kind_name(advice.bottleneck_group) == "ap+pc1"
    changed = follow(spec, advice)
    assert [m.count for m in changed.machines] == [13, 12]  # one more PC1 machine
    after = simulate(changed)
    b, a = measure(before), measure(after)
    # the bottleneck group finishes its work sooner, and the pool with it
    assert a.group(Phase.PC1).backlogged_s < b.group(Phase.PC1).backlogged_s * 0.97
    assert a.makespan < b.makespan
    util = a.group(Phase.PC1).utilization
    assert util is not None and util >= 0.99
    # what the advisor predicted from the simulated durations
    predicted = advice_for(changed, after).capacity_h
    assert predicted > advice.capacity_h * 1.05


def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text("""
name = "tiny"
[[miners]]
id = "t01000"
share = 0.8
deals = 0.25
[[miners]]
id = "t01001"
share = 0.2
[[machines]]
name = "box"
count = 3
storage = "nfs"
slots = [{ phases = "ap,pc1,pc2,c1,c2,fin", count = 2 }]
[durations]
ap = "1m"
pc1 = { mean = "5m", kind = "lognormal", sigma = 0.1 }
pc2 = "1m"
c1 = "10s"
c2 = "1m"
fin = "30s"
[arrivals]
backlog = 20
""")
    return path


def test_json_has_both_policies_and_plots_are_written(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, [str(small_file(tmp_path)), "--json",
                                    "--plots", str(tmp_path / "plots")])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert set(data["runs"]) == {"sim pooled", "sim static"}
    pooled = data["runs"]["sim pooled"]
    assert pooled["done"] == 20 and pooled["groups"][0]["phases"] == "ap+pc1+pc2+c1+c2+fin"
    assert 0.9 <= pooled["groups"][0]["utilization_backlogged"] <= 1.0
    assert sorted(Path(p).name for p in data["plots"]) == sorted(
        f"sim-{p}-{kind}.png" for p in ("pooled", "static") for kind in ("gantt",
                                                                          "utilization"))
    for p in data["plots"]:
        assert Path(p).read_bytes()[:4] == b"\x89PNG"


def test_table_and_advice(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, [str(small_file(tmp_path)), "--policy", "pooled",
                                    "--advise"])
    assert out.exit_code == 0, out.output
    assert "utilization while backlogged" in out.output
    assert "sim pooled, advice followed" in out.output.replace("\n", " ") or \
        "advice" in out.output
    assert "ratio advisor: bottleneck" in out.output


def test_bad_scenario_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(small_file(tmp_path).read_text().replace('share = 0.2', 'share = -1'))
    out = CliRunner().invoke(main, [str(bad)])
    assert out.exit_code == 2
    assert out.output.strip().count("\n") == 0 and "miners.1.share" in out.output
    out = CliRunner().invoke(main, ["no-such-scenario"])
    assert out.exit_code == 2 and "seed-003" in out.output
