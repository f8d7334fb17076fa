"""atop's random transforms RT1, RT2, RT3 (docs/method.md section 3).

A grid x grid array of cells; a mask blanks whole cells (1 = hole): exactly
round(rate * cells) of them for RT1/RT2, and for RT3 `passes` disjoint
groups that tile the grid, one per purifier pass. RT2 and RT3 add Gaussian
noise (clipped to [0,1]) before masking. Draws come from the caller's
torch.Generator; they follow atop's semantics, not its random stream.
"""

import torch


def num_passes(cfg):
    return cfg["passes"] if cfg["kind"] == "rt3" else 1


def _hole_range(cfg, p, cells):
    if cfg["kind"] == "rt3":
        return p * cells // cfg["passes"], (p + 1) * cells // cfg["passes"]
    return 0, int(round(cfg["missing_rate"] * cells))


def draw(cfg, shape, generator=None, device=None):
    """Masks `[n,1,h,w]` and noises `[n,c,h,w]` (None for RT1), one per pass."""
    n, c, h, w = shape
    g = cfg["grid"]
    cells = g * g
    draws = n if cfg["mask_scope"] == "per-sample" else 1
    orders = [torch.randperm(cells, generator=generator) for _ in range(draws)]
    if draws == 1:
        orders = orders * n
    masks, noises = [], []
    for p in range(num_passes(cfg)):
        start, end = _hole_range(cfg, p, cells)
        holes = torch.zeros(n, cells)
        for i, order in enumerate(orders):
            holes[i, order[start:end]] = 1.0
        grid = holes.view(n, 1, g, g)
        mask = grid.repeat_interleave(h // g, 2).repeat_interleave(w // g, 3)
        masks.append(mask.to(device))
        if cfg["kind"] == "rt1":
            noises.append(None)
        else:
            z = torch.randn(n, c, h, w, generator=generator) * cfg["noise_sigma"]
            noises.append(z.to(device))
    return masks, noises


def apply(x, masks, noises):
    """clip(x + noise, 0, 1) * (1 - mask) for each pass."""
    out = []
    for mask, noise in zip(masks, noises):
        noised = x if noise is None else (x + noise).clamp(0, 1)
        out.append(noised * (1 - mask))
    return out
