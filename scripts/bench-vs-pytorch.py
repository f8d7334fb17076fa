#!/usr/bin/env python3
"""Times the same networks and steps as `atop bench` in PyTorch eager, on the
same machine, and prints the ratio atop/PyTorch per benchmark.

    cargo run -p atop-trainer -- bench --json runs/bench-atop.json \
      --set 'purifier={kind="gan",image_channels=1,cnum=16}' \
      --set finetune.attack=fgsm --set finetune.attack_through=classifier
    python3 scripts/bench-vs-pytorch.py --atop runs/bench-atop.json

The --set flags give the GAN recipe twinned here: the GAN inpainter and
the paper's FGSM on the classifier. The quickstart's own recipe (the conv
AE, PGD-5 through the defense, λ 0.5) is twinned too: plain `atop bench`
gives its rows. Row names carry the purifier and the attack, so figures of
one recipe are never set against another's.

`--scale cifar` times the rows of `atop bench --scale cifar` (WRN-28-10 and
ResNet-18 training steps at 32x32, the cnum-48 inpainter at 256x256).

On a GPU (scripts/gpu-smoke.sh does this): `atop bench --device cuda:0` and
`--device cuda` here; both wait for the device at the end of each step.

Networks (the fmnist.toml quickstart models, with the GAN): the small CNN classifier
(width 16), the DeepFillv2-style generator (cnum 16, one channel, with
contextual attention), the SN-PatchGAN discriminator (cnum 16), RT2 on 28x28
(padded to 32 inside the generator). Adam everywhere, batch 32. This script
is a benchmark twin of the Rust models written for timing, not a reference
for their numerics (the golden tests use scripts/golden/make_golden.py).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class GConv(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, dilation=1, act="elu"):
        super().__init__()
        self.act, self.cout = act, cout
        gated = act is not None
        self.conv = nn.Conv2d(cin, 2 * cout if gated else cout, k, stride, dilation * (k - 1) // 2, dilation)

    def forward(self, x):
        y = self.conv(x)
        if self.act is None:
            return y
        f, g = y.split(self.cout, 1)
        f = F.relu(f) if self.act == "relu" else F.elu(f)
        return f * torch.sigmoid(g)


class Down(nn.Module):
    def __init__(self, cin, cout, hidden):
        super().__init__()
        self.a, self.b = GConv(cin, hidden, 3, 2), GConv(hidden, cout)

    def forward(self, x):
        return self.b(self.a(x))


class Up(nn.Module):
    def __init__(self, cin, cout, hidden):
        super().__init__()
        self.a, self.b = GConv(cin, hidden), GConv(hidden, cout)

    def forward(self, x):
        return self.b(self.a(F.interpolate(x, scale_factor=2, mode="nearest")))


def attention(f, mask, scale=10.0):
    n, c, h, w = f.shape
    hd, wd = h // 2, w // 2
    raw = F.unfold(f, 4, padding=1, stride=2)                     # [n, c*16, L]
    cols = F.unfold(f[:, :, ::2, ::2], 3, padding=1)             # [n, c*9, L]
    filt = cols / torch.sqrt((cols ** 2 + 1e-4).sum(1, keepdim=True))
    s = filt.transpose(1, 2) @ cols                              # [n, L, P]
    eye = torch.eye(3, device=f.device).view(1, 1, 3, 3)
    L = hd * wd
    s = F.conv2d(s.view(n, 1, L, L), eye, padding=1)
    s = s.view(n, hd, wd, hd, wd).permute(0, 2, 1, 4, 3).reshape(n, 1, L, L)
    s = F.conv2d(s, eye, padding=1)
    s = s.view(n, wd, hd, wd, hd).permute(0, 2, 1, 4, 3).reshape(n, L, L)
    m = F.unfold(mask[:, :, ::8, ::8], 3, padding=1)
    known = (m.sum(1) == 0).float().view(n, L, 1)
    a = torch.softmax(s * known * scale, 1) * known
    return F.fold(raw @ a, (h, w), 4, padding=1, stride=2) / 4


class Generator(nn.Module):
    def __init__(self, ch=1, c=16):
        super().__init__()
        self.s1 = nn.ModuleList([GConv(ch + 2, c // 2, 5), Down(c // 2, c, c), Down(c, 2 * c, 2 * c)]
                                + [GConv(2 * c, 2 * c, 3, 1, d) for d in (1, 2, 4, 8, 16, 1, 1)]
                                + [Up(2 * c, c, c), Up(c, c // 4, c // 2), GConv(c // 4, ch, act=None)])
        self.b1 = nn.ModuleList([GConv(ch, c // 2, 5), Down(c // 2, c, c // 2), Down(c, 2 * c, c)]
                                + [GConv(2 * c, 2 * c, 3, 1, d) for d in (1, 2, 4, 8, 16)])
        self.b2 = nn.ModuleList([GConv(ch, c // 2, 5), Down(c // 2, c, c // 2), Down(c, 2 * c, 2 * c),
                                 GConv(2 * c, 2 * c, act="relu")])
        self.b2_after = nn.ModuleList([GConv(2 * c, 2 * c), GConv(2 * c, 2 * c)])
        self.tail = nn.ModuleList([GConv(4 * c, 2 * c), GConv(2 * c, 2 * c), Up(2 * c, c, c),
                                   Up(c, c // 4, c // 2), GConv(c // 4, ch, act=None)])

    def forward(self, image, mask):
        h, w = image.shape[2:]
        ph, pw = (-h) % 8, (-w) % 8
        frame = torch.ones_like(mask)
        image, frame = F.pad(image, (0, pw, 0, ph)), F.pad(frame, (0, pw, 0, ph))
        mask = F.pad(mask, (0, pw, 0, ph), value=1.0)
        xin = (image * 2 - 1) * (1 - mask)
        x = torch.cat([xin, frame, mask], 1)
        for layer in self.s1:
            x = layer(x)
        x1 = torch.tanh(x)
        blended = x1 * mask + xin * (1 - mask)
        hb = blended
        for layer in self.b1:
            hb = layer(hb)
        a = blended
        for layer in self.b2:
            a = layer(a)
        a = attention(a, mask)
        for layer in self.b2_after:
            a = layer(a)
        x = torch.cat([hb, a], 1)
        for layer in self.tail:
            x = layer(x)
        x2 = torch.tanh(x)
        return ((x1 + 1) / 2)[:, :, :h, :w], ((x2 + 1) / 2)[:, :, :h, :w]


class ConvAE(nn.Module):
    """The conv U-Net AE purifier (shared/src/model/autoencoder.rs), width 16."""

    def __init__(self, ch=1, w=16):
        super().__init__()

        def double(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.ReLU())
        self.enc1, self.down1 = double(ch + 2, w), nn.Conv2d(w, 2 * w, 3, 2, 1)
        self.enc2, self.down2 = double(2 * w, 2 * w), nn.Conv2d(2 * w, 4 * w, 3, 2, 1)
        self.bottleneck, self.up2 = double(4 * w, 4 * w), nn.Conv2d(4 * w, 2 * w, 3, 1, 1)
        self.dec2, self.up1 = double(4 * w, 2 * w), nn.Conv2d(2 * w, w, 3, 1, 1)
        self.dec1, self.to_image = double(2 * w, w), nn.Conv2d(w, ch, 1)

    def forward(self, image, mask):
        h, w = image.shape[2:]
        ph, pw = (-h) % 4, (-w) % 4
        frame = F.pad(torch.ones_like(mask), (0, pw, 0, ph))
        image, mask = F.pad(image, (0, pw, 0, ph)), F.pad(mask, (0, pw, 0, ph), value=1.0)
        x = torch.cat([(image * 2 - 1) * (1 - mask), frame, mask], 1)
        e1 = self.enc1(x)
        e2 = self.enc2(F.relu(self.down1(e1)))
        b = self.bottleneck(F.relu(self.down2(e2)))
        u2 = F.relu(self.up2(F.interpolate(b, scale_factor=2, mode="nearest")))
        d2 = self.dec2(torch.cat([u2, e2], 1))
        u1 = F.relu(self.up1(F.interpolate(d2, scale_factor=2, mode="nearest")))
        d1 = self.dec1(torch.cat([u1, e1], 1))
        return ((torch.tanh(self.to_image(d1)) + 1) / 2)[:, :, :h, :w]


class Discriminator(nn.Module):
    def __init__(self, ch=1, c=16):
        super().__init__()
        widths = [ch + 1, c, 2 * c, 4 * c, 4 * c, 4 * c, 4 * c]
        self.convs = nn.ModuleList([nn.utils.parametrizations.spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 5, 2, 2))
                                    for i in range(6)])

    def forward(self, image, mask):
        x = torch.cat([image * 2 - 1, mask], 1)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return x.flatten(1)


class SmallCnn(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, c, 3, padding=1), nn.Conv2d(c, 2 * c, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(2 * c * 49, 4 * c), nn.Linear(4 * c, 10)

    def forward(self, x):
        x = (x - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class WideBlock(nn.Module):
    # RobustBench's pre-activation block: a projected shortcut reads the
    # pre-activated input, an identity shortcut the raw input.
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, k=10, classes=10):
        super().__init__()
        n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks = []
        for g, stride in enumerate((1, 2, 2)):
            blocks += [WideBlock(w[g] if i == 0 else w[g + 1], w[g + 1], stride if i == 0 else 1) for i in range(n)]
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.fc = nn.BatchNorm2d(w[3]), nn.Linear(w[3], classes)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    # The CIFAR stem: 3x3 conv, no max-pool.
    def __init__(self, w=64, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
        widths, blocks, cin = (w, 2 * w, 4 * w, 8 * w), [], w
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(8 * w, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def rt2(x, gen, grid=7):
    # The draw happens on the CPU (as in atop) and moves to the model's device.
    # A quarter of the grid's cells go missing (7x7: 12 of 49).
    n, _, h, w = x.shape
    count = grid * grid
    missing = round(0.25 * count)
    cells = torch.stack([torch.randperm(count, generator=gen) < missing for _ in range(n)]).float().view(n, 1, grid, grid)
    mask = F.interpolate(cells, size=(h, w), mode="nearest").to(x.device)
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    noised = (x + 0.25 * noise).clamp(0, 1)
    return noised * (1 - mask), mask


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(name, batch, fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    row = {"name": name, "batch": batch, "median_ms": statistics.median(times), "min_ms": min(times)}
    print(f"{name:<28} batch {batch:>4}  median {row['median_ms']:>9.2f} ms  min {row['min_ms']:>9.2f} ms", flush=True)
    return row


def cifar_scale(args, dev):
    """The rows of `atop bench --scale cifar`."""
    b, rows = args.batch, []
    x32 = torch.rand(b, 3, 32, 32).to(dev)
    y = (torch.arange(b) % 10).to(dev)
    for name, net in (("WRN-28-10 train step (32x32)", WideResNet()), ("ResNet-18 train step (32x32)", ResNet18())):
        if args.only and args.only not in name:
            continue
        net = net.to(dev)
        opt = torch.optim.Adam(net.parameters(), 1e-3)

        def step():
            opt.zero_grad()
            F.cross_entropy(net(x32), y).backward()
            opt.step()
        rows.append(timed(name, b, step, args.repeats))
    name = "inpainter cnum 48 forward+backward (256x256)"
    if not args.only or args.only in name:
        g = Generator(3, 48).to(dev)
        x256 = torch.rand(b, 3, 256, 256).to(dev)
        gen = torch.Generator().manual_seed(1)

        def forward_backward():
            inp, mask = rt2(x256, gen, grid=8)
            g(inp, mask)[1].mean().backward()
        rows.append(timed(name, b, forward_backward, args.repeats))
    return rows


def compare(args, rows):
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    if args.atop:
        atop = {r["name"]: r for r in json.load(open(args.atop))}
        print(f"\n| step (batch {args.batch}) | atop ms | PyTorch ms | atop / PyTorch |\n|---|---|---|---|")
        for r in rows:
            a = atop.get(r["name"])
            if a:
                print(f"| {r['name']} | {a['median_ms']:.1f} | {r['median_ms']:.1f} | {a['median_ms'] / r['median_ms']:.2f} |")
            else:
                # Row names carry the purifier and the fine-tuning attack, so a
                # run of another recipe has no twin here (the docstring's command).
                print(f"| {r['name']} | no such row | {r['median_ms']:.1f} | - |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--atop", help="JSON written by `atop bench --json`")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--scale", default="fmnist", choices=("fmnist", "cifar"),
                    help="cifar: the rows of `atop bench --scale cifar` (WRN-28-10, ResNet-18, the cnum-48 inpainter at 256x256)")
    ap.add_argument("--only", help="with --scale cifar: only the rows whose name contains this")
    ap.add_argument("--json", help="also write PyTorch's figures here, in `atop bench --json`'s format "
                    "(scripts/bench-medians.py reads both)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(777)
    dev = torch.device(args.device)
    if args.scale == "cifar":
        compare(args, cifar_scale(args, dev))
        return
    gen = torch.Generator().manual_seed(1)
    b = args.batch
    x = torch.rand(b, 1, 28, 28).to(dev)
    y = (torch.arange(b) % 10).to(dev)
    f, g, d = SmallCnn().to(dev), Generator().to(dev), Discriminator().to(dev)
    opt_f = torch.optim.Adam(f.parameters(), 1e-3)
    opt_g = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.5, 0.999))
    rows = []

    def classifier_step():
        opt_f.zero_grad()
        F.cross_entropy(f(x), y).backward()
        opt_f.step()
    rows.append(timed("classifier train step", b, classifier_step, args.repeats, 2))

    def purifier_step(inp, mask, target, extra=None):
        x1, x2 = g(inp, mask)
        opt_d.zero_grad()
        d_loss = 0.5 * F.relu(1 - d(target, mask)).mean() + 0.5 * F.relu(1 + d(x2.detach(), mask)).mean()
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss = 2 * (x1 - target).abs().mean() + 2 * (x2 - target).abs().mean() - d(x2, mask).mean()
        if extra is not None:
            loss = loss + extra(x2)
        loss.backward()
        opt_g.step()

    def purifier_rows(kind, purify, step):
        """Times one purifier's pretrain and forward+backward rows; returns its
        defense (RT2, the purifier, the classifier) for the attack rows."""
        def pretrain_step():
            inp, mask = rt2(x, gen)
            step(inp, mask, x)
        rows.append(timed(f"purifier pretrain step ({kind})", b, pretrain_step, args.repeats))

        def forward_backward():
            purify(*rt2(x, gen)).mean().backward()
        rows.append(timed(f"purifier forward+backward ({kind})", b, forward_backward, args.repeats))
        return lambda xa: f(purify(*rt2(xa, gen)))

    gan_defense = purifier_rows("GAN", lambda inp, mask: g(inp, mask)[1], purifier_step)

    for p in f.parameters():
        p.requires_grad_(False)
    f.eval()

    def fgsm(model, x0, eps):
        xa = x0.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        return (x0 + eps * grad.sign()).clamp(0, 1).detach()

    def finetune_step():
        x_adv = fgsm(f, x, 0.1)
        inp, mask = rt2(x_adv, gen)
        purifier_step(inp, mask, x, lambda x2: 0.1 * F.cross_entropy(f(x2), y))
    rows.append(timed("AToP finetune step (GAN, FGSM on the classifier)", b, finetune_step, args.repeats))

    def pgd_step_row(name, model):
        """One signed-gradient step at ε 8/255 through `model`, timed."""
        rows.append(timed(name, b, lambda: fgsm(model, x, 8 / 255), args.repeats))

    def eot20_rows(kind, defense):
        """One PGD step with the gradient averaged over 20 transform draws:
        looped (20 passes of the batch, torchattacks' EOTPGD) and batched
        (one pass of the batch repeated 20 times)."""
        def looped():
            xa = x.clone().requires_grad_(True)
            grad = sum(torch.autograd.grad(F.cross_entropy(defense(xa), y), xa)[0] for _ in range(20))
            return (x + 8 / 255 * grad.sign()).clamp(0, 1)

        def batched():
            xa = x.clone().requires_grad_(True)
            logits = defense(xa.repeat(20, 1, 1, 1))
            grad, = torch.autograd.grad(F.cross_entropy(logits, y.repeat(20), reduction="sum"), xa)
            return (x + 8 / 255 * grad.sign()).clamp(0, 1)
        repeats = min(args.repeats, 5)
        rows.append(timed(f"PGD step (defense, {kind}, EOT 20)", b, looped, repeats))
        rows.append(timed(f"PGD step (defense, {kind}, EOT 20, batched)", b, batched, repeats))

    pgd_step_row("PGD step (classifier)", f)
    pgd_step_row("PGD step (defense, GAN, EOT 1)", gan_defense)
    eot20_rows("GAN", gan_defense)

    # The quickstart's own recipe: the conv AE (L1 alone, no discriminator),
    # fine-tuned against PGD-5 through the whole defense with λ 0.5.
    ae = ConvAE().to(dev)
    opt_ae = torch.optim.Adam(ae.parameters(), 1e-4, betas=(0.5, 0.999))

    def ae_step(inp, mask, target, extra=None):
        opt_ae.zero_grad()
        out = ae(inp, mask)
        loss = (2 * out - 2 * target).abs().mean()
        if extra is not None:
            loss = loss + extra(out)
        loss.backward()
        opt_ae.step()

    ae_defense = purifier_rows("AE", ae, ae_step)

    def pgd_through_ae(x0, eps=0.1, steps=5):
        xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(ae_defense(xa), y), xa)
            xa = torch.min(torch.max(xa.detach() + 2.5 * eps / steps * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
        return xa.detach()

    def ae_finetune_step():
        x_adv = pgd_through_ae(x)
        inp, mask = rt2(x_adv, gen)
        ae_step(inp, mask, x, lambda out: 0.5 * F.cross_entropy(f(out), y))
    rows.append(timed("AToP finetune step (AE, PGD-5 on the defense)", b, ae_finetune_step, args.repeats))

    pgd_step_row("PGD step (defense, AE, EOT 1)", ae_defense)
    eot20_rows("AE", ae_defense)

    # Whole attacks on the classifier: torchattacks, when installed (its
    # torchvision pin may want another torch: use a venv of its own).
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
        print("torchattacks not installed: attack throughput skipped")
    if torchattacks is not None:
        x01 = x.clamp(0, 1)
        # Labels = the model's predictions, so every point is attacked (as in atop bench).
        with torch.no_grad():
            y_pred = f(x01).argmax(1)
        attack_repeats = min(args.repeats, 3)
        pgd20 = torchattacks.PGD(f, eps=8 / 255, alpha=2 / 255, steps=20)
        rows.append(timed("PGD-20 attack (classifier)", b, lambda: pgd20(x01, y_pred), attack_repeats))
        apgd100 = torchattacks.APGD(f, eps=8 / 255, steps=100, loss="ce")
        rows.append(timed("APGD-CE-100 attack (classifier)", b, lambda: apgd100(x01, y_pred), attack_repeats))
        for r in rows[-2:]:
            print(f"{r['name']:<32} {b / (r['median_ms'] / 1e3):>9.0f} images/s")

    compare(args, rows)


if __name__ == "__main__":
    main()
