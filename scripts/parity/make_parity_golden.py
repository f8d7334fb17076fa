#!/usr/bin/env python3
"""Runs the official AutoAttack (PyPI `pyautoattack`) and torchattacks on a
small classifier exported from this project, on the same images, and writes
the golden robust accuracies that atop's parity test compares against
(shared/tests/foundation/parity.rs; the test itself needs no PyTorch).

Inputs, committed in shared/tests/golden/parity/:
  classifier.safetensors  an atop artifact: the small CNN (width 8) trained by
                          `atop train-classifier --set classifier.width=8`;
                          its tensors are in PyTorch names and layouts
  images.safetensors      256 Fashion-MNIST test images (uint8) and labels,
                          written by --make-images from Debian's dataset
Output: shared/tests/golden/parity/parity.json

    python3 -m venv v && v/bin/pip install pyautoattack==0.2.0 torchattacks==3.5.1 \
        safetensors numpy
    v/bin/python scripts/parity/make_parity_golden.py [--make-images]

Use a venv of its own: torchattacks pulls torchvision and with it the newest
torch (2.15 when the committed golden file was made; the versions used are
recorded in parity.json). About 2 minutes on 2 CPU cores.
"""
import argparse
import gzip
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "..", "shared", "tests", "golden", "parity")
EPS = 8 / 255
SUBSET, SUBSET_SEED = 256, 2024


class SmallCnn(nn.Module):
    """atop's SmallCnn (shared/src/model/classifier/small_cnn.rs)."""

    def __init__(self, width, mean, std):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 49, 4 * width)
        self.fc2 = nn.Linear(4 * width, 10)
        self.mean, self.std = mean, std

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def load_classifier(path):
    with safe_open(path, "pt") as f:
        manifest = json.loads(f.metadata()["atop"])
        cfg = manifest["classifier"]
        assert cfg["architecture"] == "small-cnn", cfg
        norm = cfg["normalization"]
        model = SmallCnn(cfg["width"], norm["mean"][0], norm["std"][0])
        state = {k[len("classifier."):]: f.get_tensor(k) for k in f.keys() if k.startswith("classifier.")}
    model.load_state_dict(state)
    return model.eval()


def make_images(fmnist_dir, path):
    def read(name):
        with gzip.open(os.path.join(fmnist_dir, name)) as f:
            return f.read()
    images = np.frombuffer(read("t10k-images-idx3-ubyte.gz"), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    labels = np.frombuffer(read("t10k-labels-idx1-ubyte.gz"), np.uint8, offset=8).astype(np.int64)
    idx = np.sort(np.random.RandomState(SUBSET_SEED).choice(len(labels), SUBSET, replace=False))
    save_file({"images": np.ascontiguousarray(images[idx]), "labels": labels[idx], "indices": idx.astype(np.int64)},
              path, metadata={"source": "Fashion-MNIST t10k", "subset_seed": str(SUBSET_SEED)})


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-images", action="store_true")
    ap.add_argument("--fmnist", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(2)
    images_path = os.path.join(GOLDEN, "images.safetensors")
    if args.make_images or not os.path.exists(images_path):
        make_images(args.fmnist, images_path)
    model = load_classifier(os.path.join(GOLDEN, "classifier.safetensors"))
    with safe_open(images_path, "pt") as f:
        x = f.get_tensor("images").float() / 255
        y = f.get_tensor("labels")

    from pyautoattack import AutoAttack
    import torchattacks

    def autoattack(version, attacks=None):
        aa = AutoAttack(model, norm="Linf", eps=EPS, version=version, attacks=attacks, seed=0)
        aa.verbose = False
        if version == "custom":
            aa.apgd.n_restarts = 1  # as in `standard`
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=SUBSET)
        return accuracy(model, x_adv, y)

    golden = {
        "eps": EPS,
        "norm": "Linf",
        "points": SUBSET,
        "clean_accuracy": accuracy(model, x, y),
        # The first images' logits: proves the test runs the same model.
        "logits_first4": model(x[:4]).detach().tolist(),
        "robust_accuracy": {},
    }
    r = golden["robust_accuracy"]
    r["autoattack apgd-ce"] = autoattack("custom", ["apgd-ce"])
    r["autoattack apgd-t"] = autoattack("custom", ["apgd-t"])
    r["autoattack standard"] = autoattack("standard")
    torch.manual_seed(0)
    r["torchattacks pgd-20"] = accuracy(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=20)(x, y), y)
    r["torchattacks apgd-ce"] = accuracy(model, torchattacks.APGD(model, eps=EPS, steps=100, loss="ce")(x, y), y)
    golden["versions"] = {"torch": torch.__version__, "pyautoattack": "0.2.0", "torchattacks": torchattacks.__version__}
    with open(os.path.join(GOLDEN, "parity.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print(json.dumps({k: v for k, v in golden.items() if k != "logits_first4"}, indent=1))


if __name__ == "__main__":
    main()
