#!/usr/bin/env python3
"""The paper's comparison table from `atop eval` reports (standard library only).

    scripts/comparison-table.py runs/paper-cpu/report.json [more reports...]
    scripts/comparison-table.py 'runs/a/report.json@defense=AToP,classifier=standard' ...

A report's rows are named "classifier" and "defense" when it holds one of
each; `@old=new,...` after a path renames its models for the table.

One line per evaluated model (bare classifier or defense), one column per
threat model: clean, L-inf worst case (and its attacks), the unseen L2 and
StAdv attacks, and the classifier-only transfer rows. Each cell is the
expected accuracy (mean over draws) with every-draw and majority after it,
all in percent. Rows of several reports (models evaluated in separate runs)
are put together; a model evaluated twice must agree point for point.
"""
import json
import sys


def cell(row):
    if row is None:
        return "-"
    if row["draws"] == 1:
        return f"{100 * row['accuracy_mean']:.1f}"
    return (
        f"**{100 * row['accuracy_mean']:.1f}** / {100 * row['accuracy_every_draw']:.1f}"
        f" / {100 * row['accuracy_majority']:.1f}"
    )


def column(row):
    """The table column a report row belongs to."""
    if row["attack"] in ("clean", "clean, transform only"):
        return row["attack"]
    threat = f"{row['norm']} {row['eps']:g}"
    if row["attack"] == "worst case":
        return f"{threat} worst case"
    mode = "transfer" if row["mode"] == "classifier-only" else row["mode"]
    return f"{threat} {row['attack']} ({mode})"


def main(paths):
    models, columns, cells, protocols = [], [], {}, set()
    for arg in paths:
        path, _, renames = arg.partition("@")
        rename = dict(r.split("=", 1) for r in renames.split(",") if r)
        with open(path) as f:
            report = json.load(f)
        for row in report["eval"]["rows"]:
            protocols.add(row.get("protocol", ""))
            name, col = rename.get(row["model"], row["model"]), column(row)
            if name not in models:
                models.append(name)
            if col not in columns:
                columns.append(col)
            if (name, col) in cells:
                # The same model under the same seeded protocol gives the
                # same counts in every report; anything else is a conflict.
                if cells[(name, col)]["correct_counts"] == row["correct_counts"]:
                    continue
                sys.exit(f"{path}: {name} / {col} is in two reports, with different results")
            cells[(name, col)] = row
    print("Protocol: " + "; ".join(sorted(p for p in protocols if p)) + "\n")
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for m in models:
        print(f"| {m} | " + " | ".join(cell(cells.get((m, c))) for c in columns) + " |")
    print(
        "\nCells: expected accuracy (mean over draws, bold) / robust in every draw / majority"
        " vote, in %; bare classifiers are deterministic and show one figure."
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
