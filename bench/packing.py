"""Packing benchmark: our placement policies on Alibaba's openb trace, the ATC'23 FGD paper's way.

    python bench/packing.py                       # default trace, 4 policies x seeds 42..51
    python bench/packing.py --variants            # + every gpushare*/multigpu*/cpu* variant
    python bench/packing.py --json > result.json  # one JSON object on stdout
    python bench/packing.py --trace my_pods.csv --nodes my_nodes.csv --png fig.png

Static replay: shuffle with a seed, resample to 130 % of GPU capacity, place one by one, no
departures; GPU allocation ratio at arrived 90..130 %. Dynamic replay (traces with times): pods
arrive at creation_time and leave at deletion_time; GPU-hours of GPUs holding any work. The
published FGD/BestFit numbers for the same trace are printed beside ours.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import mean

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gpucost import openb
from gpucost.core.packing.frag import ShapeDistribution
from gpucost.core.packing.model import NodeSpec
from gpucost.core.packing.policies import POLICIES, make_policy
from gpucost.core.packing.replay import LEVELS, inflate, replay_dynamic, replay_static

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRACE_DIR = SHARED / "alibaba-gpu-v2023"
PUBLISHED = SHARED / "fgd-atc23-results" / "analysis_allo_discrete.csv"
PUBLISHED_POLICIES = {"05-BestFit": "bestfit", "06-FGD": "fgd"}
REPRODUCE_TOLERANCE = 0.5
SEEDS = tuple(range(42, 52))


def published(workload: str) -> dict[str, dict[str, float]]:
    """Mean over the paper's seeds of the allocation ratio at each level, per policy."""
    if not PUBLISHED.exists():
        return {}
    rows: dict[str, list[dict[str, str]]] = {}
    with PUBLISHED.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["workload"] == workload and row["sc_policy"] in PUBLISHED_POLICIES:
                rows.setdefault(PUBLISHED_POLICIES[row["sc_policy"]], []).append(row)
    return {
        pol: {str(level): round(mean(float(r[str(level)]) for r in rs), 2) for level in LEVELS}
        for pol, rs in rows.items()
    }


def run_trace(
    nodes: Sequence[NodeSpec],
    traced: list[openb.TracedTask],
    policies: Sequence[str],
    seeds: Sequence[int],
    progress: Progress,
    label: str,
    dynamic: bool,
) -> dict[str, object]:
    tasks = [t.task for t in traced]
    typical = ShapeDistribution.of(tasks, coverage=0.95)
    capacity = sum(n.gpus for n in nodes) * 1000
    workloads = {
        seed: inflate(tasks, capacity, seed) for seed in seeds
    }  # the same arrivals for every policy
    timed = [
        (t.task, t.created, t.deleted)
        for t in traced
        if t.created is not None and t.deleted is not None
    ]
    out: dict[str, object] = {}
    job = progress.add_task(f"{label}", total=len(policies) * len(seeds))
    for name in policies:
        runs = []
        for seed in seeds:
            progress.update(job, description=f"{label}: {name} seed {seed}")
            runs.append(
                replay_static(nodes, workloads[seed], make_policy(name, typical, seed), typical)
            )
            progress.advance(job)
        placements = sum(r.tasks - r.unplaceable for r in runs)
        entry: dict[str, object] = {
            "alloc_pct": {str(lv): round(mean(r.alloc_pct[lv] for r in runs), 2) for lv in LEVELS},
            "frag_pct": {str(lv): round(mean(r.frag_pct[lv] for r in runs), 2) for lv in LEVELS},
            "seconds_per_replay": round(mean(r.seconds for r in runs), 3),
            "us_per_placement": round(1e6 * sum(r.seconds for r in runs) / max(placements, 1), 1),
            "unplaceable_tasks": round(mean(r.unplaceable for r in runs), 1),
            "curve": _curve(runs[0].curve),
        }
        if dynamic and timed:
            progress.update(job, description=f"{label}: {name} dynamic replay")
            d = replay_dynamic(nodes, timed, make_policy(name, typical, seeds[0]))
            entry["dynamic"] = {
                "gpu_hours": round(d.gpu_hours, 1),
                "node_hours": round(d.node_hours, 1),
                "peak_gpus": d.peak_gpus,
                "failed": d.failed,
                "timeline": d.timeline[:: max(1, len(d.timeline) // 400)],
            }
        out[name] = entry
    progress.remove_task(job)
    return out


def _curve(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    step = max(1, len(points) // 300)
    return [(round(a, 2), round(b, 2)) for a, b in points[::step]]


def verdicts(ours: dict[str, object], paper: dict[str, dict[str, float]]) -> dict[str, object]:
    result: dict[str, object] = {}
    fgd = ours.get("fgd")
    if "fgd" in paper and isinstance(fgd, dict):
        worst = max(abs(fgd["alloc_pct"][str(lv)] - paper["fgd"][str(lv)]) for lv in LEVELS)
        result["fgd_reproduced"] = worst <= REPRODUCE_TOLERANCE
        result["fgd_max_abs_diff"] = round(worst, 2)
    mine = ours.get("gpucost")
    if isinstance(mine, dict):
        ref = paper.get("fgd") or (fgd["alloc_pct"] if isinstance(fgd, dict) else None)
        if ref:
            result["gpucost_beats_fgd"] = {
                lv: mine["alloc_pct"][lv] > ref[lv] for lv in ("100", "130")
            }
            result["compared_with"] = (
                "published FGD" if "fgd" in paper else "our FGD (no published numbers)"
            )
    return result


def render(console: Console, report: dict[str, object]) -> None:
    for trace, entry in report["traces"].items():
        table = Table(
            title=f"{trace}: GPU allocation ratio (%) at arrived GPU request", title_justify="left"
        )
        table.add_column("policy")
        for lv in LEVELS:
            table.add_column(f"{lv}%", justify="right")
        table.add_column("frag@100", justify="right")
        table.add_column("s/replay", justify="right")
        table.add_column("µs/placement", justify="right")
        for name, r in entry["policies"].items():
            table.add_row(
                name,
                *(f"{r['alloc_pct'][str(lv)]:.2f}" for lv in LEVELS),
                f"{r['frag_pct']['100']:.2f}",
                f"{r['seconds_per_replay']:.2f}",
                f"{r['us_per_placement']:.0f}",
            )
        for name, r in entry.get("published", {}).items():
            table.add_row(
                f"[dim]{name} (published)[/]",
                *(f"[dim]{r[str(lv)]:.2f}[/]" for lv in LEVELS),
                "",
                "",
                "",
            )
        console.print(table)
        v = entry.get("verdict", {})
        if "fgd_reproduced" in v:
            ok = "[green]reproduced[/]" if v["fgd_reproduced"] else "[red]NOT reproduced[/]"
            console.print(
                f"  our FGD vs published: max |diff| {v['fgd_max_abs_diff']} points -> {ok} "
                f"(±{REPRODUCE_TOLERANCE})"
            )
        if "gpucost_beats_fgd" in v:
            marks = ", ".join(
                f"{lv}%: {'[green]yes[/]' if b else '[red]no[/]'}"
                for lv, b in v["gpucost_beats_fgd"].items()
            )
            console.print(f"  gpucost above {v['compared_with']}: {marks}")
        dyn = {n: r["dynamic"] for n, r in entry["policies"].items() if "dynamic" in r}
        if dyn:
            base = dyn.get("bestfit", next(iter(dyn.values())))["gpu_hours"]
            console.print(
                "  dynamic replay GPU-hours: "
                + ", ".join(
                    f"{n} {d['gpu_hours']:.0f} ({d['gpu_hours'] / base:.3f}x bestfit)"
                    for n, d in dyn.items()
                )
            )
    speed = report.get("speed")
    if speed:
        console.print(
            f"speed ({speed['trace']}): gpucost {speed['gpucost_seconds']:.2f} s per full replay, "
            f"{speed['ratio_to_bestfit']:.2f}x best-fit's {speed['bestfit_seconds']:.2f} s (same "
            "run, one core)"
        )


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = list(report["traces"].items())
    fig, axes = plt.subplots(1, len(traces), figsize=(6 * len(traces), 4.5), squeeze=False)
    for ax, (trace, entry) in zip(axes[0], traces):
        for name, r in entry["policies"].items():
            xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
            ax.plot(xs, ys, label=name, linewidth=1.2)
        for name, r in entry.get("published", {}).items():
            ax.plot(
                [int(lv) for lv in r],
                list(r.values()),
                "o--",
                label=f"{name} (published)",
                markersize=3,
            )
        ax.plot([0, 130], [0, 130], ":", color="grey", linewidth=0.8)
        ax.set(
            xlim=(80, 130),
            ylim=(80, 100),
            xlabel="arrived GPU request (% of capacity)",
            ylabel="GPU allocation ratio (%)",
            title=trace,
        )
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def variant_traces() -> list[Path]:
    return sorted(
        p
        for p in TRACE_DIR.glob("openb_pod_list_*.csv")
        if p.stem.split("_")[-1].startswith(("gpushare", "multigpu", "cpu"))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trace", type=Path, action="append", help="openb-format pod CSV (repeatable)"
    )
    parser.add_argument("--nodes", type=Path, default=TRACE_DIR / "openb_node_list_gpu_node.csv")
    parser.add_argument(
        "--variants", action="store_true", help="also run every gpushare*/multigpu*/cpu* variant"
    )
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seeds", default=f"{SEEDS[0]}..{SEEDS[-1]}", help="e.g. 42..51 or 42,43")
    parser.add_argument("--no-dynamic", action="store_true", help="skip the replay with departures")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--png", type=Path, help="write allocation ratio vs arrived workload plot")
    args = parser.parse_args(argv)

    seeds = _seeds(args.seeds)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        make_policy(p, ShapeDistribution(()))  # unknown names fail before any work
    traces = args.trace or [TRACE_DIR / "openb_pod_list_default.csv"]
    if args.variants:
        traces += [t for t in variant_traces() if t not in traces]
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 140)
    try:
        nodes = openb.read_nodes(args.nodes)
        loaded = [(t, openb.read_pods(t)) for t in traces]
    except openb.TraceError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    report: dict[str, object] = {"nodes": str(args.nodes), "seeds": list(seeds), "traces": {}}
    with Progress(console=console, transient=True) as progress:
        for path, traced in loaded:
            name = path.stem
            ours = run_trace(nodes, traced, policies, seeds, progress, name, not args.no_dynamic)
            paper = published(name)
            report["traces"][name] = {
                "policies": ours,
                "published": paper,
                "verdict": verdicts(ours, paper),
            }
    first = next(iter(report["traces"]))
    pols = report["traces"][first]["policies"]
    if "gpucost" in pols and "bestfit" in pols:
        g, b = pols["gpucost"]["seconds_per_replay"], pols["bestfit"]["seconds_per_replay"]
        report["speed"] = {
            "trace": first,
            "gpucost_seconds": g,
            "bestfit_seconds": b,
            "ratio_to_bestfit": round(g / b, 2),
        }
    if args.png:
        plot(report, args.png)
    if args.json:
        # The schema first: trace, policies -> alloc_pct/frag_pct/seconds_per_replay.
        slim = {
            "trace": first,
            "policies": {
                n: {k: v for k, v in r.items() if k not in ("curve", "dynamic")}
                for n, r in pols.items()
            },
            "published": report["traces"][first]["published"],
            "verdict": report["traces"][first]["verdict"],
            "speed": report.get("speed"),
            "traces": {
                t: {
                    "policies": {
                        n: {k: v for k, v in r.items() if k not in ("curve",)}
                        for n, r in e["policies"].items()
                    },
                    "published": e["published"],
                    "verdict": e["verdict"],
                }
                for t, e in report["traces"].items()
            },
        }
        for e in slim["traces"].values():
            for r in e["policies"].values():
                if "dynamic" in r:
                    r["dynamic"] = {k: v for k, v in r["dynamic"].items() if k != "timeline"}
        json.dump(slim, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        render(console, report)
    if args.png:
        console.print(f"plot written to {args.png}")
    return 0


def _seeds(spec: str) -> tuple[int, ...]:
    if ".." in spec:
        lo, hi = spec.split("..")
        return tuple(range(int(lo), int(hi) + 1))
    return tuple(int(s) for s in spec.split(","))


if __name__ == "__main__":
    sys.exit(main())
