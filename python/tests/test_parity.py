"""atop_torch against atop: the golden files atop's own test writes and
checks (shared/tests/foundation/python_golden.rs)."""

import json
import os

import pytest
import torch

import atop_torch

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = ["ae-rt2", "ae-rt3", "ae-rt1-batch", "ae-rt2-purify35", "gan-rt2", "resnet18-rt2", "wrn10-2-rt2"]


def golden(name):
    with open(os.path.join(GOLDEN, name + ".json")) as f:
        return json.load(f)


def tensor(values, shape):
    return torch.tensor(values, dtype=torch.float32).view(*shape)


@pytest.mark.parametrize("name", CASES)
def test_the_defense_reproduces_atop_with_atops_draw(name):
    g = golden(name)
    defense = atop_torch.load(os.path.join(GOLDEN, name + ".safetensors"))
    n, c, h, w = g["shape"]
    x = tensor(g["x"], g["shape"])
    # The draw is at the purifier's size (purify_size), the rest at the image's.
    _, _, dh, dw = g["draw_shape"]
    masks = [tensor(p["mask"], (n, 1, dh, dw)) for p in g["passes"]]
    noises = [None if p["noise"] is None else tensor(p["noise"], (n, c, dh, dw)) for p in g["passes"]]
    with torch.no_grad():
        logits, purified, transformed = defense.forward_with(x, masks, noises)
        bare = defense.classifier(x)
    for t, p in zip(transformed, g["passes"]):
        assert torch.allclose(t, tensor(p["transformed"], (n, c, dh, dw)), atol=1e-5)
    assert torch.allclose(purified, tensor(g["purified"], g["shape"]), atol=1e-5)
    assert torch.allclose(logits, tensor(g["logits"], (n, -1)), atol=1e-5)
    assert torch.allclose(bare, tensor(g["classifier_logits"], (n, -1)), atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_fresh_draws_follow_atops_transform(name):
    defense = atop_torch.load(os.path.join(GOLDEN, name + ".safetensors"))
    cfg = defense.transform_config
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    masks, noises = defense.draw(x, torch.Generator().manual_seed(1))
    cells = cfg["grid"] ** 2
    side = defense.purify_size or 28  # the draw is at the purifier's size
    cell = side // cfg["grid"]
    holes = [m[:, 0, ::cell, ::cell].flatten(1).sum(1) for m in masks]
    if cfg["kind"] == "rt3":
        assert len(masks) == cfg["passes"]
        assert torch.equal(sum(masks), torch.ones_like(masks[0]))  # the passes tile the grid
    else:
        assert all(int(k) == round(cfg["missing_rate"] * cells) for k in holes[0])
    if cfg["mask_scope"] == "batch-shared":
        assert torch.equal(masks[0][0], masks[0][1])
    assert (noises[0] is None) == (cfg["kind"] == "rt1")
    # A seeded generator replays the draw; the module's call uses one.
    a = defense(x, generator=torch.Generator().manual_seed(5))
    b = defense(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    t, m = defense.transform(x)
    assert t.shape == (3, 1, side, side) and m.shape == (3, 1, side, side)
    assert torch.all(t[m.expand_as(t) == 1] == 0)


def test_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "zero.safetensors"
    bad.write_bytes(bytes(64))
    with pytest.raises(ValueError, match="not an atop artifact"):
        atop_torch.load(bad)


def _rewritten(tmp_path, edit, keep=lambda name: True):
    """ae-rt2's artifact with its manifest edited by `edit` and only the
    tensors `keep` accepts."""
    from safetensors.torch import load_file, save_file

    src = os.path.join(GOLDEN, "ae-rt2.safetensors")
    manifest = atop_torch.read_manifest(src)
    edit(manifest)
    out = tmp_path / "edited.safetensors"
    tensors = {k: v for k, v in load_file(src).items() if keep(k)}
    save_file(tensors, str(out), metadata={"atop": json.dumps(manifest)})
    return out


def test_a_purifier_only_artifact_loads_as_the_purification(tmp_path):
    def no_classifier(m):
        m["classifier"] = None

    path = _rewritten(tmp_path, no_classifier, keep=lambda k: k.startswith("purifier."))
    g = golden("ae-rt2")
    purification = atop_torch.load(path)
    x = tensor(g["x"], g["shape"])
    n, c, h, w = g["shape"]
    masks = [tensor(p["mask"], (n, 1, h, w)) for p in g["passes"]]
    noises = [None if p["noise"] is None else tensor(p["noise"], g["shape"]) for p in g["passes"]]
    with torch.no_grad():
        logits, purified, _ = purification.forward_with(x, masks, noises)
        fresh = purification(x, generator=torch.Generator().manual_seed(0))
    assert logits is None and purification.classifier is None
    assert torch.allclose(purified, tensor(g["purified"], g["shape"]), atol=1e-5)
    assert fresh.shape == x.shape


def test_weights_that_do_not_fit_the_manifest_are_named(tmp_path):
    def wider(m):
        m["purifier"]["width"] = 8

    with pytest.raises(ValueError, match="edited.safetensors: purifier weights do not fit"):
        atop_torch.load(_rewritten(tmp_path, wider))


def test_unknown_kinds_are_named(tmp_path):
    def unknown(m):
        m["classifier"]["architecture"] = "vit"

    with pytest.raises(ValueError, match="unknown classifier architecture `vit`"):
        atop_torch.load(_rewritten(tmp_path, unknown))
