"""The models of atop's shared crate, in PyTorch, with atop's parameter names."""

import torch
from torch import nn
from torch.nn import functional as F


class SmallCnn(nn.Module):
    """atop's `small-cnn`: two 3x3 convs with 2x2 max pooling, two linear layers."""

    def __init__(self, cfg):
        super().__init__()
        c, (h, w) = cfg["width"], cfg["image_size"]
        self.conv1 = nn.Conv2d(cfg["image_channels"], c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.fc1 = nn.Linear(2 * c * (h // 4) * (w // 4), 4 * c)
        self.fc2 = nn.Linear(4 * c, cfg["num_classes"])
        norm = cfg["normalization"]
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


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
    if kind == "small-cnn":
        return SmallCnn(cfg)
    raise NotImplementedError(f"classifier architecture `{kind}` is not in atop_torch yet (small-cnn is)")


def purifier(cfg):
    kind = cfg["kind"]
    if kind == "ae":
        return ConvAutoencoder(cfg)
    if kind == "identity":
        return Identity()
    raise NotImplementedError(f"purifier kind `{kind}` is not in atop_torch yet (ae and identity are)")
