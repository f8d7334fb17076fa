"""Reading an atop artifact: the manifest in the safetensors header and the
weights under `classifier.` and `purifier.`."""

import json

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from . import models, transform as rt


def read_manifest(path):
    """The artifact's manifest (the header metadata key `atop`)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 100 << 20:
            raise ValueError(f"{path}: not an atop artifact (header length {n})")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__", {})
    if "atop" not in meta:
        raise ValueError(f"{path}: no `atop` manifest in its header: not an atop artifact")
    return json.loads(meta["atop"])


def _load(module, tensors, prefix, path):
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise ValueError(f"{path}: {prefix[:-1]} weights do not fit: {e}") from None
    # atop keeps no BatchNorm batch counter (it only matters in training).
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: {prefix[:-1]} weights do not fit: missing {missing}, unexpected {unexpected}")
    return module


def _resize(x, h, w):
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


class Defense(nn.Module):
    """x -> random transform -> purifier -> classifier, as atop computes it."""

    def __init__(self, manifest, classifier, purifier):
        super().__init__()
        self.manifest = manifest
        self.classifier = classifier
        self.purifier_net = purifier
        self.transform_config = manifest["transform"]
        self.purify_size = manifest.get("purify_size", 0)

    def purifier(self, image, mask):
        """The purifier on one transformed image and its mask (1 = hole)."""
        return self.purifier_net(image, mask)

    def _purify_dims(self, x):
        s = self.purify_size
        return (x.shape[2], x.shape[3]) if s == 0 else (s, s)

    def draw(self, x, generator=None):
        """One transform draw for `x`: per pass, the mask and the noise."""
        h, w = self._purify_dims(x)
        return rt.draw(self.transform_config, (x.shape[0], x.shape[1], h, w), generator, x.device)

    def transform(self, x, generator=None):
        """`(transformed, mask)` of the first purifier pass of a fresh draw."""
        masks, noises = self.draw(x, generator)
        h, w = self._purify_dims(x)
        return rt.apply(_resize(x, h, w), masks, noises)[0], masks[0]

    def forward_with(self, x, masks, noises):
        """Logits (None for a purifier-only artifact), purified image and
        per-pass transformed images for a given draw."""
        h, w = x.shape[2], x.shape[3]
        ph, pw = self._purify_dims(x)
        transformed = rt.apply(_resize(x, ph, pw), masks, noises)
        parts = [self.purifier_net(t, m) for t, m in zip(transformed, masks)]
        if self.transform_config["kind"] == "rt3" and len(parts) > 1:
            purified = sum(p * m for p, m in zip(parts, masks))
        else:
            purified = parts[0]
        purified = _resize(purified, h, w)
        logits = None if self.classifier is None else self.classifier(purified)
        return logits, purified, transformed

    def forward(self, x, generator=None):
        """The logits through a fresh draw; for a purifier-only artifact, the
        purified image."""
        masks, noises = self.draw(x, generator)
        logits, purified, _ = self.forward_with(x, masks, noises)
        return purified if logits is None else logits


def load(path, device="cpu"):
    """The artifact as a module in eval mode on `device`: a defense; its
    classifier alone for a classifier-only artifact; for a purifier-only
    artifact (a pre-trained purifier) a Defense without classifier, whose
    call returns the purified image."""
    manifest = read_manifest(path)
    tensors = load_file(str(path))
    has_purifier = manifest.get("purifier") is not None and manifest.get("transform") is not None
    if manifest.get("classifier") is None and not has_purifier:
        raise ValueError(f"{path}: holds neither a classifier nor a purifier with its transform")
    classifier = None
    if manifest.get("classifier") is not None:
        classifier = _load(models.classifier(manifest["classifier"]), tensors, "classifier.", path)
        if not has_purifier:
            return classifier.to(device).eval()
    purifier = _load(models.purifier(manifest["purifier"]), tensors, "purifier.", path)
    return Defense(manifest, classifier, purifier).to(device).eval()
