#!/usr/bin/env python3
"""The attack-strength study's table and plot (standard library only).

    scripts/attack-study-table.py OUT.svg runs/attack-study/NAME [more study dirs...]

(StAdv's configurations, flow bounded by 0.05, and the L2 ones are other
threats: their own curves, never compared with the L-inf ones.)

Each study directory holds one `atop eval` per attack configuration
(scripts/attack-study.sh). Per configuration and model (bare classifier,
defense): expected accuracy (mean over draws), every draw, majority; the
cost in gradient evaluations (points x steps x EOT x restarts; for the
first-fooled compositions an upper bound, since later attacks see only
the points still robust) and in wall seconds (the whole `atop eval`: the
attack on the classifier and the defense, and the clean rows). Prints a
markdown table sorted by cost and draws accuracy against gradient
evaluations, one curve per attack family. Wall seconds compare only rows
of the same backend (the last column).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svgplot  # noqa: E402


def gradient_evaluations(row, points):
    """Gradient evaluations per point times points, from the row's schedule."""
    components = 2 if row["attack"] == "autoattack-rand" else 1
    eot = max(row["eot"], 1)
    return points * row["steps"] * eot * max(row["restarts"], 1) * components


def family(name):
    for prefix in ("pgd500", "pgd200", "pgd50", "apgd-ce", "apgd-dlr", "aa-rand"):
        if name.startswith(prefix):
            return prefix
    if name.startswith("stadv"):
        return "stadv (flow 0.05)"
    if name.startswith("l2-pgd50"):
        return "pgd50 (L2 1.5)"
    return name


def load(study):
    out = []
    for name in sorted(os.listdir(study)):
        path = os.path.join(study, name, "report.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            report = json.load(f)
        rows = report["eval"]["rows"]
        points = len(report["eval"]["indices"])
        for row in rows:
            if row["attack"] in ("clean", "clean, transform only", "worst case"):
                continue
            out.append(
                {
                    "study": os.path.basename(study.rstrip("/")),
                    "config": name,
                    "model": row["model"],
                    "row": row,
                    "grads": gradient_evaluations(row, points),
                    "seconds": report["elapsed_seconds"],
                    "backend": "LibTorch CPU" if "--device cpu" in report.get("command", "") else "flex",
                }
            )
    return out


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    entries = [e for study in sys.argv[2:] for e in load(study)]
    print("| study | model | configuration | step | loss | EOT | selection | accuracy (mean) | every draw | majority | gradient evaluations | wall s | backend |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in sorted(entries, key=lambda e: (e["study"], e["model"], e["grads"], e["config"])):
        r = e["row"]
        step = "adaptive" if r.get("step_size") is None else f"{r['step_size']:.4f}"
        print(
            f"| {e['study']} | {e['model']} | {e['config']} | {step} | {r.get('loss', '-')} | {r['eot']} "
            f"| {r.get('selection') or '-'} | **{100 * r['accuracy_mean']:.1f}** | {100 * r['accuracy_every_draw']:.1f} "
            f"| {100 * r['accuracy_majority']:.1f} | {e['grads']:,} | {e['seconds']:.0f} | {e['backend']} |"
        )
    # The defense's rows; a study of a bare classifier (no defense rows)
    # plots the classifier's.
    with_defense = {e["study"] for e in entries if e["row"]["kind"] == "defense"}
    series = {}
    for e in entries:
        if e["row"]["kind"] != ("defense" if e["study"] in with_defense else "classifier"):
            continue
        key = f"{e['study']}: {family(e['config'])}"
        series.setdefault(key, []).append((e["grads"], 100 * e["row"]["accuracy_mean"]))
    svgplot.chart(
        sys.argv[1],
        "Attack strength on validation data: accuracy against cost",
        "gradient evaluations (points x steps x EOT), log scale",
        "expected accuracy under attack (%)",
        [(k, v, None, False) for k, v in sorted(series.items())],
        log_x=True,
    )


if __name__ == "__main__":
    main()
