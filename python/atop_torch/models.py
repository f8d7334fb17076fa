"""The models of atop's shared crate, in PyTorch, with atop's parameter names."""

import torch
from torch import nn
from torch.nn import functional as F


class Normalized(nn.Module):
    """A classifier that applies its own per-channel normalisation, as atop's do."""

    def __init__(self, cfg):
        super().__init__()
        norm = cfg["normalization"]
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x):
        return (x - self.mean) / self.std


class SmallCnn(Normalized):
    """atop's `small-cnn`: two 3x3 convs with 2x2 max pooling, two linear layers."""

    def __init__(self, cfg):
        super().__init__(cfg)
        c, (h, w) = cfg["width"], cfg["image_size"]
        self.conv1 = nn.Conv2d(cfg["image_channels"], c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.fc1 = nn.Linear(2 * c * (h // 4) * (w // 4), 4 * c)
        self.fc2 = nn.Linear(4 * c, cfg["num_classes"])

    def forward(self, x):
        x = self.normalize(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    """ResNet's block, in the common PyTorch CIFAR layout (`shortcut.0/1`)."""

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
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(Normalized):
    """atop's `resnet18`: the CIFAR stem (3x3 conv, no max-pool), four stages
    of two blocks, global average pooling."""

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg["width"]
        self.conv1 = nn.Conv2d(cfg["image_channels"], w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        stage = lambda cin, cout, s: nn.Sequential(BasicBlock(cin, cout, s), BasicBlock(cout, cout, 1))  # noqa: E731
        self.layer1 = stage(w, w, 1)
        self.layer2 = stage(w, 2 * w, 2)
        self.layer3 = stage(2 * w, 4 * w, 2)
        self.layer4 = stage(4 * w, 8 * w, 2)
        self.linear = nn.Linear(8 * w, cfg["num_classes"])

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WideBlock(nn.Module):
    """The pre-activation wide block, RobustBench's layout (`convShortcut`)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # A projected shortcut reads the pre-activated input, an identity one the raw input.
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(Normalized):
    """atop's `wide-resnet` (WRN-depth-widen_factor), RobustBench's layout."""

    def __init__(self, cfg):
        super().__init__(cfg)
        n, k = (cfg["depth"] - 4) // 6, cfg["widen_factor"]
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(cfg["image_channels"], widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], cfg["num_classes"])

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1).flatten(1))


def purifier_input(image, mask, multiple):
    """atop's purifier encoding: the masked image in [-1,1], a ones channel
    and the mask, padded to a multiple of `multiple` (padding is hole, and
    the ones channel is 0 there)."""
    n, _, h, w = image.shape
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    frame = torch.ones(n, 1, h, w, dtype=image.dtype, device=image.device)
    if (ph, pw) != (h, w):
        pad = (0, pw - w, 0, ph - h)
        image = F.pad(image, pad, value=0.0)
        mask = F.pad(mask, pad, value=1.0)
        frame = F.pad(frame, pad, value=0.0)
    masked = (image * 2 - 1) * (1 - mask)
    return torch.cat([masked, frame, mask], 1), (h, w)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class ConvAutoencoder(nn.Module):
    """atop's conv AE purifier: a two-level U-Net on the purifier input."""

    def __init__(self, cfg):
        super().__init__()
        c, w = cfg["image_channels"], cfg["width"]
        self.enc1 = DoubleConv(c + 2, w)
        self.down1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.enc2 = DoubleConv(2 * w, 2 * w)
        self.down2 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1)
        self.bottleneck = DoubleConv(4 * w, 4 * w)
        self.up2 = nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        self.dec2 = DoubleConv(4 * w, 2 * w)
        self.up1 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.dec1 = DoubleConv(2 * w, w)
        self.to_image = nn.Conv2d(w, c, 1)

    def forward(self, image, mask):
        x, (h, w) = purifier_input(image, mask, 4)
        e1 = self.enc1(x)
        e2 = self.enc2(F.relu(self.down1(e1)))
        b = self.bottleneck(F.relu(self.down2(e2)))
        u2 = F.relu(self.up2(F.interpolate(b, scale_factor=2, mode="nearest")))
        d2 = self.dec2(torch.cat([u2, e2], 1))
        u1 = F.relu(self.up1(F.interpolate(d2, scale_factor=2, mode="nearest")))
        d1 = self.dec1(torch.cat([u1, e1], 1))
        out = (torch.tanh(self.to_image(d1)) + 1) * 0.5
        return out[:, :, :h, :w]


class Identity(nn.Module):
    """The identity purifier (a classifier trained on transform outputs)."""

    def forward(self, image, mask):
        return image


def classifier(cfg):
    kind = cfg["architecture"]
    kinds = {"small-cnn": SmallCnn, "resnet18": ResNet18, "wide-resnet": WideResNet}
    if kind not in kinds:
        raise ValueError(f"unknown classifier architecture `{kind}` (atop_torch knows {sorted(kinds)})")
    return kinds[kind](cfg)


def purifier(cfg):
    kind = cfg["kind"]
    if kind == "ae":
        return ConvAutoencoder(cfg)
    if kind == "identity":
        return Identity()
    if kind == "gan":
        from .inpainter import Inpainter

        return Inpainter(cfg)
    raise ValueError(f"unknown purifier kind `{kind}` (atop_torch knows ae, gan and identity)")
