"""Per-operation GPU times of suite configurations through the torch front, for comparing kernel families in one run.

    scripts/py scripts/op_times.py kb54 --precision fp32,bf16 --family default,sm80 [--channels-last] [--reps 20]

For each (configuration, precision, family, layout): the median of `reps` CUDA-event timings of the forward, the
grad-input alone (w frozen) and the grad-weight alone (x frozen), each op as the torch front runs it (layout
conversions included), and the family the dispatcher picked (`jaxconv3d.explain`). `--family default` is the rule
table's choice; any other name is forced through JAXCONV3D_FAMILY (ops it does not take fall through the table).
Supporting evidence for docs/perf.md's per-lever notes; the headline comparisons come from `jaxconv3d bench`.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import workloads

DTYPES = {"fp32": (torch.float32, None), "tf32": (torch.float32, "tf32"), "bf16": (torch.bfloat16, None),
          "fp16": (torch.float16, None)}


def median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def op_times(case, prec: str, channels_last: bool, reps: int) -> dict:
    dtype, precision = DTYPES[prec]
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    gen = torch.Generator(device="cuda").manual_seed(0)
    def make(shape):
        return torch.randn(shape, generator=gen, device="cuda", dtype=dtype).contiguous(memory_format=fmt)

    x, w = make(case.x_shape).requires_grad_(True), make(case.w_shape).requires_grad_(True)
    kw = dict(case.conv_kwargs, precision=precision)
    with torch.no_grad():
        y = jt.conv3d(x, w, **kw)
    dy = make(y.shape)
    x_only, w_only = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    y_dx = jt.conv3d(x_only, w.detach(), **kw)
    y_dw = jt.conv3d(x.detach(), w_only, **kw)

    def forward():
        with torch.no_grad():
            jt.conv3d(x, w, **kw)

    return {
        "forward": median_ms(forward, reps),
        "grad_input": median_ms(lambda: torch.autograd.grad(y_dx, x_only, dy, retain_graph=True), reps),
        "grad_weight": median_ms(lambda: torch.autograd.grad(y_dw, w_only, dy, retain_graph=True), reps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", help="comma-separated suite configuration names")
    ap.add_argument("--precision", default="fp32,tf32,bf16,fp16")
    ap.add_argument("--family", default="default", help="comma-separated: default or a family to force")
    ap.add_argument("--channels-last", action="store_true", help="channels_last_3d tensors (else NCDHW)")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    cases = {c.name: c for c in workloads.load_suite()[0]}
    print(f"{torch.cuda.get_device_name()}: ms per op, median of {args.reps} CUDA-event timings "
          f"({'channels_last_3d' if args.channels_last else 'NCDHW'} tensors)")
    for name in args.configs.split(","):
        case = cases[name]
        for prec in args.precision.split(","):
            for family in args.family.split(","):
                if family == "default":
                    os.environ.pop("JAXCONV3D_FAMILY", None)
                else:
                    os.environ["JAXCONV3D_FAMILY"] = family
                dtype, precision = DTYPES[prec]
                plan = jaxconv3d.explain(case.x_shape, case.w_shape, **case.conv_kwargs, precision=precision,
                                         dtype=str(dtype).replace("torch.", ""), device="cuda")
                t = op_times(case, prec, args.channels_last, args.reps)
                cells = "  ".join(f"{op} {t[op]:7.3f} ({plan[op]['family']}: {plan[op]['tile']})" for op in t)
                print(f"{name:10s} {prec:5s} {family:14s} {cells}", flush=True)
    os.environ.pop("JAXCONV3D_FAMILY", None)


if __name__ == "__main__":
    main()
