#!/usr/bin/env python3
"""Discriminator health of pre-training runs, one line per run (stdlib only).

    scripts/gan-health-table.py STAGE DIR [DIR...]

Reads DIR/metrics.jsonl (written by `atop pretrain` or `atop finetune`) and
prints, per run: the steps, the mean score gap D(real) - D(fake) over the
first, middle and last thirds, the fraction of steps with |gap| < 0.05 (the
trainer's "stalled" threshold), the mean adversarial-to-L1 gradient ratio,
and the reconstruction L1 ([-1,1] units) of the last 15 steps.
"""
import json
import statistics as st
import sys


def summary(stage, path):
    rows = []
    with open(f"{path}/metrics.jsonl") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("stage") == stage and r.get("losses") and "d_gap" in r["losses"]:
                rows.append(r["losses"])
    if not rows:
        return None
    n = len(rows)
    thirds = [rows[: n // 3], rows[n // 3 : 2 * n // 3], rows[2 * n // 3 :]]
    gap = [st.mean(r["d_gap"] for r in t) if t else float("nan") for t in thirds]
    stalled = sum(abs(r["d_gap"]) < 0.05 for r in rows) / n
    ratio = st.mean(r["g_adv_ratio"] for r in rows)
    recon = st.mean(r["recon"] for r in rows[-15:])
    return n, gap, stalled, ratio, recon


def main(stage, paths):
    print("| run | steps | gap, first third | middle | last | stalled steps | adv/L1 gradient | recon L1, last 15 |")
    print("|---|---|---|---|---|---|---|---|")
    for p in paths:
        s = summary(stage, p)
        if s is None:
            print(f"| {p} | 0 | | | | | | |")
            continue
        n, gap, stalled, ratio, recon = s
        print(
            f"| {p} | {n} | {gap[0]:.3f} | {gap[1]:.3f} | {gap[2]:.3f} | {100 * stalled:.0f}% "
            f"| {ratio:.2f} | {recon:.3f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
