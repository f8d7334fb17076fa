#!/usr/bin/env python3
"""The recipe study's frontier: clean against robust accuracy (standard library only).

    scripts/frontier-plot.py OUT.svg runs/study/*/eval/report.json

Each report is one variant of scripts/recipe-study.sh (its directory names
it). Every defense row pair (clean, full-gradient attack) becomes a point:
x = clean expected accuracy (mean over draws), y = expected accuracy under
the report's full-gradient attack, both on the validation split. Points on
the Pareto frontier (no other point is at least as good on both axes and
better on one) are filled and joined. Prints the points as a table, the
frontier marked, so the plot's figures can be read without it.
"""
import json
import os
import sys


def points(path):
    """(variant/defense label, clean, robust) for each defense in a report."""
    with open(path) as f:
        rows = json.load(f)["eval"]["rows"]
    variant = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    clean, robust = {}, {}
    for row in rows:
        if row.get("kind") != "defense":
            continue
        if row["attack"] == "clean":
            clean[row["model"]] = row["accuracy_mean"]
        elif row["mode"] == "full" and row["attack"] != "worst case":
            robust[row["model"]] = row["accuracy_mean"]
    out = []
    for model, c in clean.items():
        if model in robust:
            stage = "pre-trained" if "pretrained" in model else "AToP"
            out.append((f"{variant} ({stage})", c, robust[model]))
    return out


def frontier(pts):
    return {
        p
        for p in pts
        if not any(q[1] >= p[1] and q[2] >= p[2] and (q[1], q[2]) != (p[1], p[2]) for q in pts)
    }


def svg(pts, front):
    w, h, pad = 720, 480, 60
    xs = [p[1] for p in pts]
    ys = [p[2] for p in pts]
    x0, x1 = min(xs) - 0.02, max(xs) + 0.02
    y0, y1 = min(ys) - 0.02, max(ys) + 0.02
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (w - 2 * pad)
    sy = lambda y: h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">clean accuracy through the defense (validation, mean over draws)</text>',
        f'<text x="15" y="{h / 2}" text-anchor="middle" transform="rotate(-90 15 {h / 2})">full-gradient PGD-EOT accuracy (validation, mean over draws)</text>',
    ]
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        y = y0 + (y1 - y0) * i / 5
        out.append(f'<text x="{sx(x)}" y="{h - pad + 15}" text-anchor="middle">{100 * x:.0f}%</text>')
        out.append(f'<text x="{pad - 5}" y="{sy(y) + 4}" text-anchor="end">{100 * y:.0f}%</text>')
    line = sorted(front, key=lambda p: p[1])
    if len(line) > 1:
        d = " ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in line)
        out.append(f'<polyline points="{d}" fill="none" stroke="#d62728" stroke-dasharray="4"/>')
    for p in pts:
        fill = "#d62728" if p in front else "white"
        out.append(
            f'<circle cx="{sx(p[1]):.1f}" cy="{sy(p[2]):.1f}" r="5" fill="{fill}" stroke="#d62728"/>'
        )
        out.append(f'<text x="{sx(p[1]) + 8:.1f}" y="{sy(p[2]) - 6:.1f}">{p[0]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(out, paths):
    pts = [p for path in paths for p in points(path)]
    if not pts:
        sys.exit("frontier-plot: no defense has both a clean and a full-gradient row")
    front = frontier(pts)
    print("| variant | clean | full-gradient PGD-EOT | on the frontier |")
    print("|---|---|---|---|")
    for p in sorted(pts, key=lambda p: -p[1]):
        print(f"| {p[0]} | {100 * p[1]:.1f} | {100 * p[2]:.1f} | {'yes' if p in front else ''} |")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(svg(pts, front))
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
