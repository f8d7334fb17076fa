#!/usr/bin/env python3
"""AutoAttack `rand` (APGD-CE and APGD-DLR with EOT 20) on an atop defense,
scored over transform draws, beside `atop eval`'s figures on the same points.

    pip install ./python torchattacks
    python python/examples/autoattack_rand.py DEFENSE.safetensors REPORT.json --points 64

The official AutoAttack is not on PyPI; torchattacks' port of its APGD is.
This composes `rand` from it as published: APGD-CE then APGD-DLR, 100
iterations each, EOT 20 (torchattacks' own `AutoAttack(version="rand")`
leaves APGD at its default 10 iterations). Two compositions of the same
components:

* official: AutoAttack's composition as published. A point counts as broken
  once one forward pass misclassifies it, only the points no draw fooled go
  on to the next component, and a point one clean pass got wrong is skipped.
  On a randomized defense that judges robustness from a single draw.
* best-loss: each component attacks every point; per point the iterate
  with the higher mean margin loss over `--select-draws` draws (a generator
  of its own, not the scoring draws) is kept.

Each adversarial image is then scored over `--draws` fresh draws (expected
accuracy), and atop's `autoattack-rand` rows from the report, if it has
them, are printed beside.
"""
import argparse

import torch
import torchattacks

import atop_torch
from atop_torch.points import atop_row_accuracy, expected_accuracy, report_points


def mean_margin(defense, x, labels, draws, generator):
    """Per point, the mean over draws of max_other logit - true logit."""
    total = torch.zeros(len(labels))
    with torch.no_grad():
        for _ in range(draws):
            z = defense(x, generator=generator)
            true = z.gather(1, labels[:, None])[:, 0]
            other = z.scatter(1, labels[:, None], float("-inf")).max(1).values
            total += other - true
    return total / draws


def main():
    p = argparse.ArgumentParser()
    p.add_argument("artifact")
    p.add_argument("report")
    p.add_argument("--points", type=int, default=64)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--eot", type=int, default=20)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--select-draws", type=int, default=10)
    p.add_argument("--row-model", default="", help="the report row's model name contains this (default: the first defense row)")
    a = p.parse_args()
    torch.manual_seed(0)
    defense = atop_torch.load(a.artifact)
    x, labels, report = report_points(a.report, a.points)
    n = len(labels)

    apgd = {
        loss: torchattacks.APGD(defense, norm="Linf", eps=a.eps, steps=100, loss=loss, eot_iter=a.eot, seed=0)
        for loss in ["ce", "dlr"]
    }
    x_official = torchattacks.MultiAttack([apgd["ce"], apgd["dlr"]])(x, labels)

    select = torch.Generator().manual_seed(1)
    best, best_loss = x.clone(), torch.full((n,), float("-inf"))
    for attack in apgd.values():
        _, candidate = attack.perturb(x, labels, best_loss=True)
        margin = mean_margin(defense, candidate, labels, a.select_draws, select)
        better = margin > best_loss
        best[better], best_loss[better] = candidate[better], margin[better]

    score = lambda images: 100 * expected_accuracy(defense, images, labels, a.draws).mean().item()  # noqa: E731
    print(f"{n} points, L-inf {a.eps}, scored over {a.draws} draws (expected accuracy)")
    print(f"clean: {score(x):.1f}%")
    print(f"AutoAttack rand (torchattacks APGD-100, EOT {a.eot}), official composition: {score(x_official):.1f}%")
    print(f"APGD-CE + APGD-DLR (EOT {a.eot}), best-loss iterate per point: {score(best):.1f}%")
    for selection in ["first-fooled", "best-loss"]:
        figure, row = atop_row_accuracy(report, "autoattack-rand", n, a.row_model, selection=selection)
        if row is not None:
            print(f"atop `{row['model']} / autoattack-rand` ({selection}, EOT {row['eot']}, {row['draws']} draws): {100 * figure:.1f}%")


if __name__ == "__main__":
    main()
