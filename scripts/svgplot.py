"""A line-and-point chart as an SVG file, with the standard library only:
the study scripts (attack-study-table.py, budget-study-table.py) draw with it.

    svgplot.chart(path, title, x_label, y_label, series, log_x=False)

`series` is a list of (name, [(x, y), ...], colour, dashed); each is drawn
as points joined in x order, with a legend.
"""
import math

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


def _ticks(lo, hi, count=5):
    step = (hi - lo) / count
    return [lo + i * step for i in range(count + 1)]


def chart(path, title, x_label, y_label, series, log_x=False, width=760, height=480):
    pad_l, pad_r, pad_t, pad_b = 70, 220, 40, 50
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    pts = [(fx(x), y) for _, s, _, _ in series for x, y in s]
    if not pts:
        raise SystemExit("nothing to plot")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    margin = max((y1 - y0) * 0.08, 0.01)
    y0, y1 = y0 - margin, y1 + margin
    sx = lambda x: pad_l + (fx(x) - x0) / (x1 - x0) * (width - pad_l - pad_r)
    sy = lambda y: height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{(width - pad_r + pad_l) / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="black"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="black"/>',
        f'<text x="{(width - pad_r + pad_l) / 2}" y="{height - 12}" text-anchor="middle">{x_label}</text>',
        f'<text x="16" y="{(height - pad_b + pad_t) / 2}" text-anchor="middle" transform="rotate(-90 16 {(height - pad_b + pad_t) / 2})">{y_label}</text>',
    ]
    for t in _ticks(x0, x1):
        x = 10**t if log_x else t
        label = f"{x:.3g}"
        px = pad_l + (t - x0) / (x1 - x0) * (width - pad_l - pad_r)
        out.append(f'<line x1="{px}" y1="{height - pad_b}" x2="{px}" y2="{height - pad_b + 4}" stroke="black"/>')
        out.append(f'<text x="{px}" y="{height - pad_b + 17}" text-anchor="middle">{label}</text>')
    for t in _ticks(y0, y1):
        py = sy(t)
        out.append(f'<line x1="{pad_l - 4}" y1="{py}" x2="{width - pad_r}" y2="{py}" stroke="#ddd"/>')
        out.append(f'<text x="{pad_l - 7}" y="{py + 4}" text-anchor="end">{t:.3g}</text>')
    for i, (name, s, colour, dashed) in enumerate(series):
        colour = colour or PALETTE[i % len(PALETTE)]
        s = sorted(s)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        if len(s) > 1:
            path_d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(s))
            out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in s:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}"/>')
        ly = pad_t + 10 + 18 * i
        out.append(f'<line x1="{width - pad_r + 15}" y1="{ly}" x2="{width - pad_r + 40}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{width - pad_r + 46}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
