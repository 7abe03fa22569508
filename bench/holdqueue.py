"""Hold-queue benchmark: what a gateway's event loop spends draining a backlog of held requests.

    python bench/holdqueue.py                    # backlogs of 1,000, 10,000 and 100,000
    python bench/holdqueue.py --json             # one JSON object on stdout

A cold start or a burst past ``maxConcurrency`` leaves up to ``holdQueue`` (at most 100,000)
requests held; each freed replica slot then goes to the next one in the hold order (requests
still able to meet ``ttftObjective`` first, oldest first within each class). The drain runs on
the gateway's event loop, so its cost is latency added to every request the gateway serves.

The baseline is the order the gateway used before ``routing.HoldQueue``: every held request
sorted again on each freed slot. Half of each backlog is past the objective, as after a cold
start. Ratios are against the baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from gpucost.core.routing import HoldQueue

OBJECTIVE_S = 2.0
GAP_S = 1e-4
"""Seconds between arrivals in the backlog."""


def sorted_each_slot(backlog: int) -> tuple[float, list[int]]:
    """Seconds to drain by sorting the held requests on each freed slot, and the order."""
    arrivals = {i: i * GAP_S for i in range(backlog)}
    now = backlog * GAP_S / 2 + OBJECTIVE_S
    order: list[int] = []
    start = time.perf_counter()
    while arrivals:
        oldest = sorted(arrivals, key=arrivals.__getitem__)
        order.append(sorted(oldest, key=lambda i: now - arrivals[i] > OBJECTIVE_S)[0])
        del arrivals[order[-1]]
    return time.perf_counter() - start, order


def hold_queue(backlog: int) -> tuple[float, list[int]]:
    """Seconds to drain through ``HoldQueue`` (the first in order taken on each freed slot), and
    the order."""
    queue: HoldQueue[int] = HoldQueue()
    for i in range(backlog):
        queue.add(i, i * GAP_S)
    now = backlog * GAP_S / 2 + OBJECTIVE_S
    order: list[int] = []
    start = time.perf_counter()
    while len(queue):
        order.append(next(queue.in_order(now, OBJECTIVE_S)))
        queue.discard(order[-1])
    return time.perf_counter() - start, order


def measure(backlogs: list[int], baseline_max: int, console: Console) -> list[dict[str, object]]:
    """The baseline is quadratic: past ``baseline_max`` it is timed on that backlog and scaled
    by the square of the ratio (said in the output), or one run would take many minutes."""
    rows: list[dict[str, object]] = []
    for backlog in backlogs:
        console.log(f"draining {backlog:,} held requests")
        timed = min(backlog, baseline_max)
        baseline = sorted_each_slot(timed)[0] * (backlog / timed) ** 2
        ours = hold_queue(backlog)[0]
        rows.append(
            {
                "backlog": backlog,
                "baseline_s": baseline,
                "baseline_extrapolated": timed != backlog,
                "hold_queue_s": ours,
                "hold_queue_us_per_slot": ours / backlog * 1e6,
                "vs_baseline": ours / baseline,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlogs", default="1000,10000,100000")
    parser.add_argument(
        "--baseline-max", type=int, default=10000, help="largest backlog the baseline drains"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)
    rows = measure([int(b) for b in args.backlogs.split(",")], args.baseline_max, console)
    if args.json:
        print(json.dumps({"objective_s": OBJECTIVE_S, "runs": rows}, indent=2))
        return
    table = Table(title="Draining held requests, one freed slot at a time")
    for column in ("held", "sorted each slot", "HoldQueue", "per slot", "vs baseline"):
        table.add_column(column, justify="right")
    for r in rows:
        star = " *" if r["baseline_extrapolated"] else ""
        table.add_row(
            f"{r['backlog']:,}",
            f"{r['baseline_s']:.3f} s{star}",
            f"{r['hold_queue_s']:.3f} s",
            f"{r['hold_queue_us_per_slot']:.2f} µs",
            f"{r['vs_baseline']:.5f}×",
        )
    Console().print(table)
    if any(r["baseline_extrapolated"] for r in rows):
        Console().print(f"* timed on {args.baseline_max:,} held and scaled by the square")


if __name__ == "__main__":
    main()
