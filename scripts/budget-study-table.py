#!/usr/bin/env python3
"""The AToP budget study's table and plot (standard library only).

    scripts/budget-study-table.py OUT.svg runs/budget RUN [RUN...] [--baseline CLASSIFIER ...]

For each AToP run (runs/budget/RUN, scripts/budget-study.sh): per scored
epoch, the defense's clean and PGD-50 EOT 5 expected accuracy on VALIDATION
data (every draw and majority beside), its training compute (optimiser
steps, the training attack's gradient evaluations, wall seconds: from the
epoch artifact's manifest) and the per-epoch validation score under the
training attack (metrics.jsonl). A baseline CLASSIFIER (runs/budget/CLASSIFIER,
an adversarially trained classifier): its per-epoch validation robust
accuracy under its own training attack (metrics.jsonl) at its cumulative
compute (the manifest's, spread evenly over the epochs), and its final
clean and PGD-50 figures on the same validation points as the AToP runs
(the classifier rows of runs/budget/pretrained-CLASSIFIER, written by
`scripts/budget-study.sh ... eval-pretrained:CLASSIFIER`). Prints markdown
and draws robust accuracy against attack gradient evaluations.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svgplot  # noqa: E402


def manifest(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["atop"])


def row(report, kind, attack):
    for r in report["eval"]["rows"]:
        if r["kind"] == kind and r["attack"] == attack:
            return r
    return None


def validation_scores(run_dir):
    scores = {}
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        for line in open(path):
            m = json.loads(line)
            if m.get("validation") is not None:
                scores[m["epoch"]] = m["validation"]
    return scores


def fmt(r):
    return f"**{100 * r['accuracy_mean']:.1f}** / {100 * r['accuracy_every_draw']:.1f} / {100 * r['accuracy_majority']:.1f}"


def baseline_series(root, name):
    """A classifier's validation curve under its training attack and its
    final PGD-50 point, against cumulative training compute."""
    run_dir = os.path.join(root, name)
    m = manifest(os.path.join(run_dir, "classifier.safetensors"))
    c = m["training"]["compute"]
    epochs = m["training"]["config"]["train_classifier"]["epochs"]
    scores = validation_scores(run_dir)
    per_epoch = c["attack_gradient_evaluations"] / epochs
    curve = [(per_epoch * (e + 1), 100 * v) for e, v in sorted(scores.items())]
    out = [(f"{name}: validation under its training attack", curve, None, True)]
    rp = os.path.join(root, f"pretrained-{name}", "report.json")
    if os.path.exists(rp):
        report = json.load(open(rp))
        clean, pgd = row(report, "classifier", "clean"), row(report, "classifier", "pgd")
        print(
            f"| {name} (baseline) | {epochs - 1} | {c['optimizer_steps']} | {c['attack_gradient_evaluations']:,} | {c['wall_seconds']:.0f} "
            f"| {curve[-1][1]:.1f} | {fmt(clean)} | {fmt(pgd)} |"
        )
        out.append((f"{name}: PGD-50", [(c["attack_gradient_evaluations"], 100 * pgd["accuracy_mean"])], None, False))
    return out


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        raise SystemExit(__doc__)
    out, root = args[0], args[1]
    baselines = [args[i + 1] for i, a in enumerate(args) if a == "--baseline" and i + 1 < len(args)]
    runs = [a for i, a in enumerate(args[2:], 2) if not a.startswith("--") and args[i - 1] != "--baseline"]
    print("| run | epoch | optimiser steps | attack gradient evaluations | wall s | validation, training attack (512 points) | clean | PGD-50 EOT 5 |")
    print("|---|---|---|---|---|---|---|---|")
    series = []
    for run in runs:
        run_dir = os.path.join(root, run)
        scores = validation_scores(run_dir)
        pts = []
        eval_dir = os.path.join(run_dir, "eval")
        for name in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
            rp = os.path.join(eval_dir, name, "report.json")
            if not os.path.exists(rp):
                continue
            report = json.load(open(rp))
            m = manifest(os.path.join(run_dir, "epochs", name + ".safetensors"))
            c = m["training"]["compute"]
            epoch = m["training"]["epoch"]
            clean, pgd = row(report, "defense", "clean"), row(report, "defense", "pgd")
            val = scores.get(epoch)
            print(
                f"| {run} | {epoch} | {c['optimizer_steps']} | {c['attack_gradient_evaluations']:,} | {c['wall_seconds']:.0f} "
                f"| {'-' if val is None else f'{100 * val:.1f}'} | {fmt(clean)} | {fmt(pgd)} |"
            )
            pts.append((c["attack_gradient_evaluations"], 100 * pgd["accuracy_mean"], 100 * clean["accuracy_mean"]))
        if pts:
            series.append((f"{run}: PGD-50 EOT 5", [(x, y) for x, y, _ in pts], None, False))
            series.append((f"{run}: clean", [(x, c) for x, _, c in pts], None, True))
    for name in baselines:
        series.extend(baseline_series(root, name))
    svgplot.chart(
        out,
        "AToP budget study (validation): accuracy against training compute",
        "training attack gradient evaluations (images x attack steps), log scale",
        "expected accuracy (%)",
        series,
        log_x=True,
    )


if __name__ == "__main__":
    main()
