"""atop_torch: an atop-rs artifact as a PyTorch module.

    import atop_torch
    defense = atop_torch.load("fmnist-atop.safetensors")
    logits = defense(images)            # images in [0,1], (N, C, H, W); a fresh transform draw
    logits = defense(images, generator=torch.Generator().manual_seed(0))
    defense.classifier(images)          # the bare classifier
    t, mask = defense.transform(images) # the random transform: transformed image, mask (1 = hole)
    defense.purifier(t, mask)           # the purifier on one transformed image

A classifier-only artifact loads as the classifier, a purifier-only one (a
pre-trained purifier) as a Defense without classifier whose call returns
the purified image. Every model kind atop
has is here: the small CNN, ResNet-18 and WideResNet classifiers (BatchNorm
in eval mode, as atop runs them), the conv AE, the GAN inpainter (contextual
attention included) and the identity purifier; RT1/RT2/RT3 with per-sample
or batch-shared masks, and the purify_size resize. Parity with atop is
tested on golden files atop writes (python/tests).
"""

from .load import Defense, load, read_manifest

__all__ = ["Defense", "load", "read_manifest"]
