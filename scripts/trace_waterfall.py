#!/usr/bin/env python3
"""Draws a waterfall of traced spans, as the tests' OTLP receiver got them, with matplotlib.

    uv run scripts/trace_waterfall.py SPANS.json OUT.png

SPANS.json is the receiver's span list (GET /spans, or the file tests/integration/
test_tracing.py writes). One row per span, in tree order under each trace's root; a trace
linked to another (a job, to the request that enqueued it) follows it, marked with its link.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

Span = dict[str, Any]
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def in_tree_order(spans: list[Span]) -> list[tuple[Span, int]]:
    """(span, depth), each trace from its root down, children by start time; a trace after
    the one it links to."""
    by_parent: dict[str | None, list[Span]] = defaultdict(list)
    ids = {s["span_id"] for s in spans}
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in ids else None
        by_parent[parent].append(span)
    for children in by_parent.values():
        children.sort(key=lambda s: s["start_ns"])

    ordered: list[tuple[Span, int]] = []

    def visit(span: Span, depth: int) -> None:
        ordered.append((span, depth))
        for child in by_parent[span["span_id"]]:
            visit(child, depth + 1)

    roots = by_parent[None]
    linked = {link["span_id"] for root in roots for link in root["links"]}
    for root in sorted(
        roots, key=lambda s: (bool(s["links"]) and s["span_id"] not in linked, s["start_ns"])
    ):
        visit(root, 0)
    return ordered


def draw(spans: list[Span], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = in_tree_order(spans)
    origin = min(s["start_ns"] for s in spans)
    services = sorted({s["service"] for s in spans})
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(services)}
    names = {s["span_id"]: s["name"] for s in spans}
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.4))
    for row, (span, _) in enumerate(rows):
        start = (span["start_ns"] - origin) / 1e6
        length = max((span["end_ns"] - span["start_ns"]) / 1e6, 0.05)
        axes.barh(row, length, left=start, color=colour[span["service"]], height=0.6)
        label = f"{length:.2f} ms"
        for link in span["links"]:
            label += f"  (linked to {names.get(link['span_id'], link['span_id'])})"
        axes.text(start + length, row, " " + label, va="center", fontsize=8)
    axes.set_yticks(
        range(len(rows)), ["    " * depth + span["name"] for span, depth in rows], fontsize=9
    )
    for tick in axes.get_yticklabels():
        tick.set_horizontalalignment("left")
    axes.tick_params(axis="y", pad=150)
    axes.invert_yaxis()
    axes.set_xlabel("ms since the first span started")
    traces = sorted({s["trace_id"] for s in spans})
    axes.set_title(f"{len(spans)} spans, {len(traces)} traces: " + ", ".join(t[:8] for t in traces))
    handles = [Rectangle((0, 0), 1, 1, color=colour[name]) for name in services]
    axes.legend(handles, services, title="service.name", loc="lower right", fontsize=8)
    axes.set_xlim(right=axes.get_xlim()[1] * 1.35)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spans", type=Path, help="the receiver's span list (JSON)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    draw(json.loads(args.spans.read_text()), args.out)


if __name__ == "__main__":
    main()
