"""atop's GAN purifier: the DeepFillv2-style two-stage inpainter with
contextual attention (shared/src/model/inpainter.rs), with atop's parameter
names (`stage1.conv1.conv.weight`, `stage2.b2_conv_bn1.conv.bias`, ...)."""

import torch
from torch import nn
from torch.nn import functional as F

from .models import purifier_input


class GatedConv(nn.Module):
    """act(features) * sigmoid(gates) of one conv with 2*cout channels; a
    plain conv when `activation` is None (the to-image layers)."""

    def __init__(self, cin, cout, k, stride=1, dilation=1, activation="elu"):
        super().__init__()
        self.activation = activation
        width = cout if activation is None else 2 * cout
        self.conv = nn.Conv2d(cin, width, k, stride, dilation * (k - 1) // 2, dilation)

    def forward(self, x):
        y = self.conv(x)
        if self.activation is None:
            return y
        features, gates = y.chunk(2, 1)
        features = F.elu(features) if self.activation == "elu" else F.relu(features)
        return features * torch.sigmoid(gates)


class GatedUpConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = GatedConv(cin, cout, 3)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, cin, cout, hidden):
        super().__init__()
        self.conv1_downsample = GatedConv(cin, hidden, 3, stride=2)
        self.conv2 = GatedConv(hidden, cout, 3)

    def forward(self, x):
        return self.conv2(self.conv1_downsample(x))


class UpBlock(nn.Module):
    def __init__(self, cin, cout, hidden):
        super().__init__()
        self.conv1_upsample = GatedUpConv(cin, hidden)
        self.conv2 = GatedConv(hidden, cout, 3)

    def forward(self, x):
        return self.conv2(self.conv1_upsample(x))


class CoarseStage(nn.Module):
    def __init__(self, ch, c, dilations):
        super().__init__()
        self.conv1 = GatedConv(ch + 2, c // 2, 5)
        self.down_block1 = DownBlock(c // 2, c, c)
        self.down_block2 = DownBlock(c, 2 * c, 2 * c)
        for i, d in enumerate(dilations):
            setattr(self, f"conv_bn{i + 1}", GatedConv(2 * c, 2 * c, 3, dilation=d))
        self.bottleneck = len(dilations)
        self.up_block1 = UpBlock(2 * c, c, c)
        self.up_block2 = UpBlock(c, c // 4, c // 2)
        self.conv_to_rgb = GatedConv(c // 4, ch, 3, activation=None)

    def forward(self, x):
        x = self.down_block2(self.down_block1(self.conv1(x)))
        for i in range(self.bottleneck):
            x = getattr(self, f"conv_bn{i + 1}")(x)
        return torch.tanh(self.conv_to_rgb(self.up_block2(self.up_block1(x))))


class RefineStage(nn.Module):
    def __init__(self, ch, c, dilations, attention):
        super().__init__()
        self.attention = attention
        self.b1_conv1 = GatedConv(ch, c // 2, 5)
        self.b1_down_block1 = DownBlock(c // 2, c, c // 2)
        self.b1_down_block2 = DownBlock(c, 2 * c, c)
        for i, d in enumerate(dilations):
            setattr(self, f"b1_conv_bn{i + 1}", GatedConv(2 * c, 2 * c, 3, dilation=d))
        self.hallucination = len(dilations)
        self.b2_conv1 = GatedConv(ch, c // 2, 5)
        self.b2_down_block1 = DownBlock(c // 2, c, c // 2)
        self.b2_down_block2 = DownBlock(c, 2 * c, 2 * c)
        self.b2_conv_bn1 = GatedConv(2 * c, 2 * c, 3, activation="relu")
        self.b2_conv_bn4 = GatedConv(2 * c, 2 * c, 3)
        self.b2_conv_bn5 = GatedConv(2 * c, 2 * c, 3)
        self.conv_bn6 = GatedConv(4 * c, 2 * c, 3)
        self.conv_bn7 = GatedConv(2 * c, 2 * c, 3)
        self.up_block1 = UpBlock(2 * c, c, c)
        self.up_block2 = UpBlock(c, c // 4, c // 2)
        self.conv_to_rgb = GatedConv(c // 4, ch, 3, activation=None)

    def forward(self, x, mask):
        h = self.b1_down_block2(self.b1_down_block1(self.b1_conv1(x)))
        for i in range(self.hallucination):
            h = getattr(self, f"b1_conv_bn{i + 1}")(h)
        a = self.b2_down_block2(self.b2_down_block1(self.b2_conv1(x)))
        a = contextual_attention(self.b2_conv_bn1(a), mask, **self.attention)
        a = self.b2_conv_bn5(self.b2_conv_bn4(a))
        x = self.conv_bn7(self.conv_bn6(torch.cat([h, a], 1)))
        return torch.tanh(self.conv_to_rgb(self.up_block2(self.up_block1(x))))


def contextual_attention(f, mask, softmax_scale=10.0, fuse=True):
    """Features `f` [n, c, h, w] (h, w even) attend to 3x3 patches of the
    known region at half resolution; 4x4 raw patches are pasted back at
    stride 2. `mask` [n, 1, 4h, 4w] (1 = hole) decides, per sample, which
    patches are known."""
    n, _, h, w = f.shape
    hd, wd = h // 2, w // 2
    raw = F.unfold(f, 4, padding=1, stride=2)  # [n, c*16, L]
    cols = F.unfold(f[:, :, ::2, ::2], 3, padding=1)  # [n, c*9, L]
    norms = (cols.pow(2) + 1e-4).sum(1, keepdim=True).sqrt()
    scores = (cols / norms).transpose(1, 2) @ cols  # [n, L, P]
    if fuse:
        scores = _fuse_diagonals(scores, hd, wd)
    mask_cols = F.unfold(mask[:, :, ::8, ::8], 3, padding=1)  # [n, 9, L]
    known = (mask_cols.sum(1) == 0).to(f.dtype).view(n, hd * wd, 1)
    attention = torch.softmax(scores * known * softmax_scale, 1) * known
    return F.fold(raw @ attention, (h, w), 4, padding=1, stride=2) / 4


def _fuse_diagonals(scores, hd, wd):
    n, l, p = scores.shape
    eye = torch.eye(3, dtype=scores.dtype, device=scores.device).view(1, 1, 3, 3)
    y = F.conv2d(scores.view(n, 1, l, p), eye, padding=1)
    y = y.view(n, hd, wd, hd, wd).permute(0, 2, 1, 4, 3).reshape(n, 1, l, p)
    y = F.conv2d(y, eye, padding=1)
    return y.view(n, wd, hd, wd, hd).permute(0, 2, 1, 4, 3).reshape(n, l, p)


class Inpainter(nn.Module):
    """The GAN purifier's generator: coarse stage, paste into the holes,
    refine stage; the refined image in [0,1] is the purifier's output."""

    def __init__(self, cfg):
        super().__init__()
        ch, c = cfg["image_channels"], cfg["cnum"]
        self.channels = ch
        self.stage1 = CoarseStage(ch, c, cfg["coarse_dilations"])
        self.stage2 = RefineStage(ch, c, cfg["refine_dilations"], dict(cfg["attention"]))

    def forward(self, image, mask):
        x, (h, w) = purifier_input(image, mask, 8)
        masked, hole = x[:, : self.channels], x[:, -1:]
        x1 = self.stage1(x)
        x2 = self.stage2(x1 * hole + masked * (1 - hole), hole)
        return ((x2 + 1) * 0.5)[:, :, :h, :w]
