#!/usr/bin/env python3
"""Attack an atop defense with torchattacks' EOT-PGD and score it as atop does.

    pip install ./python torchattacks
    python python/examples/torchattacks_eot_pgd.py runs/quickstart/fmnist-atop.safetensors \
        runs/quickstart/report.json --points 64 --steps 10 --alpha 0.025 --eot 2

Takes the test points of an `atop eval` (or quickstart) report (its subset
indices) from Debian's Fashion-MNIST, runs torchattacks.EOTPGD through the
whole defense (transform, purifier, classifier: full gradients, a fresh
transform draw per forward pass), scores each adversarial image over
`--draws` fresh draws, and prints the expected accuracy beside the report's
own figure for its PGD row on the same points.
"""
import argparse

import torch
import torchattacks

import atop_torch
from atop_torch.points import atop_row_accuracy, expected_accuracy, report_points


def main():
    p = argparse.ArgumentParser()
    p.add_argument("artifact")
    p.add_argument("report")
    p.add_argument("--points", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--eot", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--row-model", default="AToP", help="the report row's model name contains this")
    a = p.parse_args()
    torch.manual_seed(0)
    defense = atop_torch.load(a.artifact)
    x, labels, report = report_points(a.report, a.points)
    attack = torchattacks.EOTPGD(defense, eps=a.eps, alpha=a.alpha, steps=a.steps, eot_iter=a.eot)
    x_adv = attack(x, labels)
    clean = expected_accuracy(defense, x, labels, a.draws).mean().item()
    robust = expected_accuracy(defense, x_adv, labels, a.draws).mean().item()
    print(f"{len(labels)} points, L-inf {a.eps}: clean {100 * clean:.1f}%")
    print(f"torchattacks EOT-PGD-{a.steps} (alpha {a.alpha}, EOT {a.eot}), {a.draws} draws: {100 * robust:.1f}%")
    figure, row = atop_row_accuracy(report, "pgd", len(labels), a.row_model)
    if row is not None:
        print(f"atop's row `{row['model']} / pgd` on the same points ({row['draws']} draws): {100 * figure:.1f}%")


if __name__ == "__main__":
    main()
