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
own figure for the same attack row on the same points.
"""
import argparse
import gzip
import json

import numpy as np
import torch
import torchattacks

import atop_torch

FMNIST = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


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
    a = p.parse_args()
    torch.manual_seed(0)
    defense = atop_torch.load(a.artifact)
    report = json.load(open(a.report))
    indices = report["eval"]["indices"][: a.points]
    images = idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[indices]
    labels = torch.tensor(idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")[indices], dtype=torch.long)
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    attack = torchattacks.EOTPGD(defense, eps=a.eps, alpha=a.alpha, steps=a.steps, eot_iter=a.eot)
    x_adv = attack(x, labels)

    def expected(images):
        with torch.no_grad():
            right = [(defense(images).argmax(1) == labels).float() for _ in range(a.draws)]
        return torch.stack(right).mean().item()

    row = next(
        r
        for r in report["eval"]["rows"]
        if r["kind"] == "defense" and r["attack"] == "pgd" and r["mode"] == "full" and "AToP" in r["model"]
    )
    atop_figure = sum(row["correct_counts"][: a.points]) / (a.points * row["draws"])
    print(f"{a.points} points, L-inf {a.eps}: clean {100 * expected(x):.1f}%")
    print(f"torchattacks EOT-PGD-{a.steps} (alpha {a.alpha}, EOT {a.eot}), {a.draws} draws: {100 * expected(x_adv):.1f}%")
    print(f"atop's row `{row['model']} / pgd` on the same points ({row['draws']} draws): {100 * atop_figure:.1f}%")


if __name__ == "__main__":
    main()
