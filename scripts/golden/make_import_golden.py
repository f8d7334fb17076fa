#!/usr/bin/env python3
"""Golden files for `atop import`: a PyTorch small CNN (the architecture of
atop's `small-cnn` classifier, width 4, 1x28x28, 10 classes), its state dict
as a DataParallel-style .pt (keys under `module.`, a pickle atop reads
without executing) and as .safetensors, and its logits on seeded images.

    ~/.cache/atop-rs/torch-venv/bin/python scripts/golden/make_import_golden.py

writes native-trainer/tests/golden/import/; the Rust test needs no Python.
"""
import json
import os

import torch
from safetensors.torch import save_file
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "../../native-trainer/tests/golden/import")
MEAN, STD = 0.2860, 0.3530


class Payload:
    """Pickles as a call to os.system: what a reader must refuse to run."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


class SmallCnn(nn.Module):
    def __init__(self, width=4, classes=10, side=28):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(2 * width * (side // 4) ** 2, 4 * width)
        self.fc2 = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = (x - MEAN) / STD
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main():
    torch.manual_seed(2024)
    model = SmallCnn().eval()
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(images)
    os.makedirs(OUT, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save({"module." + k: v for k, v in state.items()}, os.path.join(OUT, "small_cnn.pt"))
    save_file(state, os.path.join(OUT, "small_cnn.safetensors"))
    # A state dict that carries code: torch.save pickles the call.
    torch.save({"conv1.weight": state["conv1.weight"], "hook": Payload()}, os.path.join(OUT, "pickled_code.pt"))
    with open(os.path.join(OUT, "small_cnn.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "images": images.flatten().tolist(),
                "shape": list(images.shape),
                "logits": logits.flatten().tolist(),
            },
            f,
        )
    print("wrote", OUT)


if __name__ == "__main__":
    main()
