#!/usr/bin/env python3
"""Medians over paired benchmark runs, and their ratios to a reference.

    python3 scripts/bench-medians.py --reference pytorch \\
        flex=runs/b/flex-ae-1.json,runs/b/flex-ae-2.json,runs/b/flex-ae-3.json \\
        pytorch=runs/b/torch-1.json,runs/b/torch-2.json,runs/b/torch-3.json

Each series is NAME=FILE[,FILE...], files written by `atop bench --json` or
`scripts/bench-vs-pytorch.py --json`. A series may merge several files per
run (the AE and GAN recipes' rows): all files' rows are pooled by name, and
each row's figure is the median over the runs that have it. The table gives
each series' median per row (in ms, with the number of runs) and its ratio
to the reference's median; ratios of medians are what the targets in
docs/results/performance-profile.md speak of.
"""
import argparse
import json
import statistics
import sys


def load_series(spec):
    name, _, files = spec.partition("=")
    if not name or not files:
        sys.exit(f"bench-medians: a series is NAME=FILE[,FILE...], got {spec!r}")
    figures = {}
    for path in files.split(","):
        try:
            rows = json.load(open(path))
        except (OSError, ValueError) as e:
            sys.exit(f"bench-medians: {path}: {e}")
        for row in rows:
            figures.setdefault(row["name"], []).append(float(row["median_ms"]))
    return name, figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", nargs="+", help="NAME=FILE[,FILE...]")
    ap.add_argument("--reference", help="the series the ratios are to (default: the last one)")
    args = ap.parse_args()
    series = dict(load_series(s) for s in args.series)
    reference = args.reference or list(series)[-1]
    if reference not in series:
        sys.exit(f"bench-medians: no series named {reference!r}")
    others = [n for n in series if n != reference]
    rows = []
    for figures in series.values():
        rows += [r for r in figures if r not in rows]
    head = ["step"] + [f"{n} ms (runs)" for n in series] + [f"{n} / {reference}" for n in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells, medians = [row], {}
        for n, figures in series.items():
            values = figures.get(row)
            if values:
                medians[n] = statistics.median(values)
                cells.append(f"{medians[n]:.1f} ({len(values)})")
            else:
                cells.append("-")
        for n in others:
            ok = n in medians and reference in medians
            cells.append(f"{medians[n] / medians[reference]:.2f}" if ok else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
