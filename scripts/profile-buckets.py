#!/usr/bin/env python3
"""Buckets the samples of a `perf script` dump (recorded with call graphs)
by the tensor op each sample was running, for docs/results/performance-profile.md.

    perf record -F 199 --call-graph dwarf,16384 -o perf.data \
      atop bench --only NAME --repeats 5
    perf script -i perf.data | python3 scripts/profile-buckets.py [--top 12]

Each sample's stack is walked from the leaf towards the root; the first
frame that names an op decides its bucket:

* our kernels: `atop_kernels::conv2d::<function>` (im2col, col2im, the
  gemm calls inside conv2d_forward / conv2d_backward) and
  `atop_kernels::gate::<function>` (the fused gated activation);
* pure-Rust flex: `burn_flex::ops::<module>` (conv, conv_transpose, unary,
  binary, mask, matmul, reduce, ...), marked "backward" when an autodiff
  backward frame is on the same stack (e.g. conv under a backward frame is
  the convolution's weight or data gradient);
* LibTorch: the ATen op, `at::_ops::<op>::call` (convolution_backward,
  masked_fill, mul_Tensor, ...);
* otherwise the leaf: oneDNN's named code, ATen's elementwise loops on
  OpenMP workers (their stacks stop before the op frame), code generated
  at run time (oneDNN's JIT
  convolution kernels, which perf cannot unwind out of), start-up
  (dynamic loading, op registration), libgomp (OpenMP threads waiting),
  the kernel (page faults, zeroing fresh memory, scheduling), rayon (idle
  workers), or "other".
"""
import argparse
import collections
import re
import sys

FLEX_OP = re.compile(r"burn_flex::ops::(\w+)")
# Our own kernels (crate atop-kernels), added to flex as extensions.
OUR_KERNEL = re.compile(r"atop_kernels::(conv2d|gate)::(\w+)")
ATEN_OP = re.compile(r"at::_ops::(\w+)::(?:call|redispatch)")
START_UP = re.compile(r"_dl_|OperatorEntry|RegistrationHandle|FunctionSchema|registerKernel")
BACKWARD = re.compile(r"burn_autodiff.*(?:backward|Backward)|Backward<")


def samples(lines):
    """Yields each sample's frames (leaf first) as (symbol, library) pairs."""
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line[0] in " \t":
            # "\t    addr symbol+off (library)"
            parts = line.strip().split(" ", 1)
            rest = parts[1] if len(parts) > 1 else ""
            lib = ""
            m = re.search(r"\(([^()]*)\)\s*$", rest)
            if m:
                lib = m.group(1)
                rest = rest[: m.start()].strip()
            frames.append((rest, lib))
    if frames:
        yield frames


def bucket(frames):
    backward = any(BACKWARD.search(sym) for sym, _ in frames)
    for sym, _ in frames:
        m = OUR_KERNEL.search(sym)
        if m:
            return f"atop {m.group(1)}: {m.group(2)}"
        m = FLEX_OP.search(sym)
        if m:
            return f"flex {m.group(1)}" + (" (backward)" if backward else "")
        m = ATEN_OP.search(sym)
        if m:
            return f"aten {m.group(1)}"
    sym, lib = frames[0]
    if re.search(r"perf-\d+\.map", lib):
        # Code generated at run time (oneDNN's JIT convolution kernels):
        # perf cannot unwind out of it, so no op frame is seen.
        return "JIT-compiled kernels (oneDNN convolutions)"
    if "dnnl::" in sym:
        return "oneDNN convolution code (im2col, reorders)"
    if "callback_fn<at::" in sym or "mkl_vml" in sym:
        # ATen's elementwise loops on OpenMP workers, whose stacks stop
        # before the op frame.
        return "ATen elementwise loops (worker threads)"
    if "ld-linux" in lib or START_UP.search(sym):
        return "start-up (library loading, op registration)"
    if "libgomp" in lib:
        return "libgomp (OpenMP wait)"
    if "kernel" in lib or sym.startswith("[unknown]") and "kernel" in lib:
        return "kernel"
    if any("rayon" in s for s, _ in frames):
        return "rayon (no op frame reached)"
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=14, help="buckets to list; the rest are summed")
    args = ap.parse_args()
    counts = collections.Counter(bucket(f) for f in samples(sys.stdin))
    total = sum(counts.values())
    if total == 0:
        sys.exit("profile-buckets: no samples on stdin (perf script output expected)")
    print(f"| where ({total} samples) | share |\n|---|---|")
    shown = counts.most_common(args.top)
    for name, n in shown:
        print(f"| {name} | {100 * n / total:.1f}% |")
    rest = total - sum(n for _, n in shown)
    if rest:
        print(f"| everything else | {100 * rest / total:.1f}% |")


if __name__ == "__main__":
    main()
