#!/usr/bin/env python3
"""Golden files for `atop import`: a PyTorch small CNN (the architecture of
atop's `small-cnn` classifier, width 4, 1x28x28, 10 classes), its state dict
as a DataParallel-style .pt (keys under `module.`, a pickle atop reads
without executing) and as .safetensors, and its logits on seeded images; ResNet-18 and WRN twins
with trained BatchNorm statistics; a DeepFillv2-layout GAN generator
checkpoint (needs `pip install ./python`).

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


class Block(nn.Module):
    """Kuang Liu's BasicBlock, RobustBench's ResNet-18 layout."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """atop's `resnet18` at width 4 (64 in the paper's), 3x32x32."""

    def __init__(self, w=4, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        stage = lambda cin, cout, s: nn.Sequential(Block(cin, cout, s), Block(cout, cout, 1))
        self.layer1, self.layer2 = stage(w, w, 1), stage(w, 2 * w, 2)
        self.layer3, self.layer4 = stage(2 * w, 4 * w, 2), stage(4 * w, 8 * w, 2)
        self.linear = nn.Linear(8 * w, classes)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(x.mean((2, 3)))


class WideBlock(nn.Module):
    """RobustBench's WideResNet BasicBlock (pre-activation, convShortcut)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        if not self.equal:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.equal else self.convShortcut(pre))


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """atop's `wide-resnet` at depth 10, widen factor 1 (28 and 10 in the paper's)."""

    def __init__(self, depth=10, k=1, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1)
        # RobustBench's WideResNet builds this block and never calls it; its
        # checkpoints carry the weights.
        self.sub_block1 = NetworkBlock(n, w[0], w[1], 1)
        self.block2 = NetworkBlock(n, w[1], w[2], 2)
        self.block3 = NetworkBlock(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.relu(self.bn1(x)).mean((2, 3)))


def trained_golden(make, name, seed):
    """A model made after seeding, running statistics that are not the
    defaults, then eval-mode logits on seeded images."""
    torch.manual_seed(seed)
    model = make()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    model.eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(images)
    torch.save(model.state_dict(), os.path.join(OUT, name + ".pt"))
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({"images": images.flatten().tolist(), "logits": logits.flatten().tolist()}, f)


def gan_golden():
    """A DeepFillv2-layout checkpoint: the generator's state dict under `G`
    (atop_torch's inpainter, cnum 4, 1 channel: the public DeepFillv2's key
    names), a discriminator tensor and a step count beside it, and the
    generator's output on a seeded image and mask."""
    import atop_torch.inpainter

    torch.manual_seed(17)
    cfg = {
        "image_channels": 1,
        "cnum": 4,
        "coarse_dilations": [1, 2, 4, 8, 16, 1, 1],
        "refine_dilations": [1, 2, 4, 8, 16],
        "attention": {"softmax_scale": 10.0, "fuse": True},
    }
    g = atop_torch.inpainter.Inpainter(cfg).eval()
    with torch.no_grad():  # biases away from PyTorch's init, so they are checked too
        for name, p in g.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    gen = torch.Generator().manual_seed(19)
    image = torch.rand(2, 1, 28, 28, generator=gen)
    mask = (torch.rand(2, 1, 7, 7, generator=gen) < 0.25).float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    with torch.no_grad():
        out = g(image * (1 - mask), mask)
    state = {k: v.contiguous() for k, v in g.state_dict().items()}
    torch.save({"G": state, "D": {"conv.weight": torch.zeros(2, 2)}, "n_iter": 7}, os.path.join(OUT, "gan_generator.pt"))
    with open(os.path.join(OUT, "gan_generator.json"), "w") as f:
        json.dump(
            {
                "image": (image * (1 - mask)).flatten().tolist(),
                "mask": mask.flatten().tolist(),
                "purified": out.flatten().tolist(),
            },
            f,
        )


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
    trained_golden(ResNet18, "resnet18_w4", 11)
    trained_golden(WideResNet, "wrn10_1", 13)
    gan_golden()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
