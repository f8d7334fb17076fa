#!/usr/bin/env python3
"""Golden values for the shared crate's numeric tests.

An independent, loop-based NumPy reading of the reference DeepFillv2 layers
(gated convolution, contextual attention as in the public PyTorch code, but
with hole validity per sample). The Rust code computes the same thing with
batched matmul/unfold/fold; agreement between the two is the test.

Writes shared/tests/golden/*.json. Needs only numpy; the Rust tests read the
committed JSON and need neither Python nor PyTorch.

    python3 scripts/golden/make_golden.py
"""
import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tests" / "golden"


def conv2d(x, w, b=None, stride=1, pad=0, dilation=1):
    """x [Cin,H,W], w [Cout,Cin,k,k] -> [Cout,Ho,Wo], plain loops."""
    cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.zeros((cin, h + 2 * pad, wd + 2 * pad))
    xp[:, pad:pad + h, pad:pad + wd] = x
    span = dilation * (k - 1) + 1
    ho = (h + 2 * pad - span) // stride + 1
    wo = (wd + 2 * pad - span) // stride + 1
    out = np.zeros((cout, ho, wo))
    for o in range(cout):
        for i in range(ho):
            for j in range(wo):
                acc = 0.0 if b is None else b[o]
                for c in range(cin):
                    for ky in range(k):
                        for kx in range(k):
                            acc += w[o, c, ky, kx] * xp[c, i * stride + ky * dilation, j * stride + kx * dilation]
                out[o, i, j] = acc
    return out


def conv_transpose2d(y, w, stride, pad):
    """y [Cin,h,w], w [Cin,Cout,k,k] -> [Cout,H,W]."""
    cin, h, wd = y.shape
    _, cout, k, _ = w.shape
    ho = (h - 1) * stride - 2 * pad + k
    wo = (wd - 1) * stride - 2 * pad + k
    full = np.zeros((cout, (h - 1) * stride + k, (wd - 1) * stride + k))
    for c in range(cin):
        for i in range(h):
            for j in range(wd):
                full[:, i * stride:i * stride + k, j * stride:j * stride + k] += y[c, i, j] * w[c]
    return full[:, pad:pad + ho, pad:pad + wo]


def patches(x, k, stride, pad):
    """[C,H,W] -> [L,C,k,k], row-major over positions, zero padding."""
    c, h, wd = x.shape
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    xp[:, pad:pad + h, pad:pad + wd] = x
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    return np.stack([xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
                     for i in range(ho) for j in range(wo)])


def fuse(scores, hd, wd):
    eye = np.eye(3).reshape(1, 1, 3, 3)
    L, P = scores.shape
    y = conv2d(scores[None], eye, pad=1)[0]
    y = y.reshape(hd, wd, hd, wd).transpose(1, 0, 3, 2).reshape(L, P)
    y = conv2d(y[None], eye, pad=1)[0]
    return y.reshape(wd, hd, wd, hd).transpose(1, 0, 3, 2).reshape(L, P)


def contextual_attention(f, mask, scale=10.0):
    """f [N,C,H,W], mask [N,1,4H,4W] -> [N,C,H,W]."""
    out = []
    for fi, mi in zip(f, mask):
        c, h, wd = fi.shape
        hd, wdd = h // 2, wd // 2
        raw = patches(fi, 4, 2, 1)                      # [L, C, 4, 4]
        small = fi[:, ::2, ::2]
        w = patches(small, 3, 1, 1)                      # [L, C, 3, 3]
        m = patches(mi[:, ::8, ::8], 3, 1, 1)            # [L, 1, 3, 3]
        known = (m.mean(axis=(1, 2, 3)) == 0).astype(np.float64)
        norm = np.sqrt((w ** 2 + 1e-4).sum(axis=(1, 2, 3), keepdims=True))
        y = conv2d(small, w / norm, pad=1)               # [L, hd, wd]
        y = fuse(y.reshape(hd * wdd, hd * wdd), hd, wdd)
        y = y * known[:, None]
        e = np.exp(scale * y - (scale * y).max(axis=0, keepdims=True))
        y = e / e.sum(axis=0, keepdims=True) * known[:, None]
        y = y.reshape(-1, hd, wdd)
        out.append(conv_transpose2d(y, raw, 2, 1) / 4.0)
    return np.stack(out)


def elu(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def flat(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def main():
    rng = np.random.default_rng(20240116)
    OUT.mkdir(parents=True, exist_ok=True)

    # Gated conv: 3x3, dilation 2, stride 1, ELU, 2 -> 3 channels.
    x = rng.normal(size=(1, 2, 7, 7))
    w = rng.normal(scale=0.3, size=(6, 2, 3, 3))
    b = rng.normal(scale=0.1, size=(6,))
    y = conv2d(x[0], w, b, stride=1, pad=2, dilation=2)
    gated = elu(y[:3]) * sigmoid(y[3:])
    (OUT / "gated_conv.json").write_text(json.dumps({
        "input_shape": list(x.shape), "input": flat(x),
        "weight_shape": list(w.shape), "weight": flat(w), "bias": flat(b),
        "dilation": 2, "output_shape": [1, 3, 7, 7], "output": flat(gated[None]),
    }))

    # Contextual attention: two samples with DIFFERENT holes, so a
    # sample-0-only validity mask would give a different answer for sample 1.
    f = rng.normal(size=(2, 3, 8, 8))
    mask = np.zeros((2, 1, 32, 32))
    mask[0, :, 8:16, 8:24] = 1
    mask[1, :, 16:32, 0:8] = 1
    mask[1, :, 0:8, 24:32] = 1
    out = contextual_attention(f, mask)
    (OUT / "contextual_attention.json").write_text(json.dumps({
        "features_shape": list(f.shape), "features": flat(f),
        "mask_shape": list(mask.shape), "mask": flat(mask),
        "output_shape": list(out.shape), "output": flat(out),
    }))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
