"""The points an `atop eval` report scored, from Debian's Fashion-MNIST
(`dataset-fashion-mnist`), and expected accuracy over fresh transform draws:
what the examples need to put a PyTorch attack's figure beside atop's.
Needs numpy (the package itself does not), as the examples do."""

import gzip
import json

import numpy as np
import torch

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# The IDX header of a Fashion-MNIST file is 16 bytes at most; its images 47 MB.
_MAX_IDX_BYTES = 64 << 20


def _idx(path):
    with gzip.open(path) as f:
        data = f.read(_MAX_IDX_BYTES + 1)
    if len(data) > _MAX_IDX_BYTES or len(data) < 4 or data[:2] != b"\0\0" or data[2] != 8:
        raise ValueError(f"{path}: not an uncompressed-byte IDX file of at most {_MAX_IDX_BYTES} bytes")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def report_points(report_path, limit=None, root=FASHION_MNIST):
    """`(images, labels)` of a Fashion-MNIST report's test subset, in its
    order (images in [0,1], (N, 1, 28, 28)), the first `limit` of them."""
    with open(report_path) as f:
        report = json.load(f)
    # A validation-split report names its split in this line; its indices
    # are into the training file's held-out points, which this does not carve.
    if report.get("dataset") != "fashion-mnist":
        raise ValueError(f"{report_path}: not a report on Fashion-MNIST's test set (dataset: {report.get('dataset')!r})")
    indices = report["eval"]["indices"][:limit]
    images = _idx(f"{root}/t10k-images-idx3-ubyte.gz")[indices]
    labels = _idx(f"{root}/t10k-labels-idx1-ubyte.gz")[indices]
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    return x, torch.tensor(labels, dtype=torch.long), report


def expected_accuracy(defense, images, labels, draws):
    """Per point, the fraction of `draws` fresh transform draws that classify
    it right (a deterministic classifier gives 0 or 1)."""
    with torch.no_grad():
        right = [(defense(images).argmax(1) == labels).float() for _ in range(draws)]
    return torch.stack(right).mean(0)


def atop_row_accuracy(report, attack, points, model="", kind="defense", mode="full", selection=None):
    """A report's expected accuracy on its first `points` points for the
    first row of `attack` whose model name contains `model`, and the row."""
    row = next(
        (
            r
            for r in report["eval"]["rows"]
            if r["kind"] == kind
            and r["attack"] == attack
            and r["mode"] == mode
            and model in r["model"]
            and (selection is None or r.get("selection") == selection)
        ),
        None,
    )
    if row is None:
        return None, None
    return sum(row["correct_counts"][:points]) / (points * row["draws"]), row
