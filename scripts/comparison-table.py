#!/usr/bin/env python3
"""The comparison table (README, docs/results/comparison.md) from `atop eval`
reports (standard library only).

    scripts/comparison-table.py REPORT.json [REPORT.json ...]

For each model of each report (a bare classifier's rows, or a defense's):
clean accuracy and, per threat model, the worst case per point over its
attacks (the report's `worst case` rows), each as expected accuracy /
every draw / majority, %. The training compute comes from the artifact's
manifest (`training.compute`, where recorded). Prints markdown.
"""
import json
import sys

THREATS = [("linf", "L∞ 0.1 worst case"), ("l2", "L2 1.5 worst case"), ("flow-linf", "StAdv 0.05 worst case")]


def manifest(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["atop"])


def cell(r):
    if r is None:
        return "-"
    return f"**{100 * r['accuracy_mean']:.1f}** / {100 * r['accuracy_every_draw']:.1f} / {100 * r['accuracy_majority']:.1f}"


def compute(artifacts, model):
    """The training compute recorded by the model's artifact: the one whose
    path ends as the model's name does (a report of several classifiers
    names them by path), else the report's last artifact that records one."""
    def named(path):
        stem = path[: -len(".safetensors")] if path.endswith(".safetensors") else path
        return model.split(": ")[-1] == "/".join(stem.split("/")[-2:])

    ordered = [p for p, _ in artifacts if named(p)] or [p for p, _ in reversed(artifacts)]
    for path in ordered:
        try:
            c = manifest(path)["training"].get("compute")
        except (OSError, KeyError, ValueError):
            continue
        if c and "attack_gradient_evaluations" in c:
            return (
                f"{c['optimizer_steps']} steps, {c['attack_gradient_evaluations']:,} attack gradients "
                f"through the {c.get('attack_gradients_through', '?')}, {c['wall_seconds']:.0f} s"
            )
    return "-"


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("| report | model | clean | " + " | ".join(t for _, t in THREATS) + " | training compute (from its artifact) |")
    print("|---|---|---|" + "---|" * len(THREATS) + "---|")
    for path in sys.argv[1:]:
        report = json.load(open(path))
        rows = report["eval"]["rows"]
        models = []
        for r in rows:
            if r["model"] not in models:
                models.append(r["model"])
        for model in models:
            mine = [r for r in rows if r["model"] == model]
            clean = next((r for r in mine if r["attack"] == "clean"), None)
            worst = {r["norm"]: r for r in mine if r["attack"] == "worst case"}
            print(
                f"| {path} | {model} | {cell(clean)} | "
                + " | ".join(cell(worst.get(norm)) for norm, _ in THREATS)
                + f" | {compute(report['artifacts'], model)} |"
            )


if __name__ == "__main__":
    main()
