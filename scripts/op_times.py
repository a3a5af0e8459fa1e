"""Per-operation GPU times of suite configurations, ours per kernel family next to cuDNN, in one run.

    scripts/py scripts/op_times.py kb54 --precision fp32,bf16 --family default,sm80,cudnn [--channels-last]

For each (configuration, precision, family, layout): the median of `reps` CUDA-event timings of the forward, the
grad-input alone (w frozen) and the grad-weight alone (x frozen). `--family default` is our rule table's choice
through the torch front (layout conversions included), with the family and tile `jaxconv3d.explain` names; any
other name but `cudnn` is forced through JAXCONV3D_FAMILY (ops it does not take fall through the table); `cudnn` is
torch's F.conv3d on the same tensors (cudnn.benchmark on, TF32 only for tf32). Supporting evidence for
docs/perf.md's per-lever notes; the headline comparisons come from `jaxconv3d bench`.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import workloads
from jaxconv3d.card_rates import event_median_ms

DTYPES = {"fp32": (torch.float32, None), "tf32": (torch.float32, "tf32"), "bf16": (torch.bfloat16, None),
          "fp16": (torch.float16, None)}


def op_times(case, prec: str, channels_last: bool, reps: int, cudnn: bool = False, device: str = "cuda") -> dict:
    dtype, precision = DTYPES[prec]
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    gen = torch.Generator(device=device).manual_seed(0)

    def make(shape):
        return torch.randn(shape, generator=gen, device=device, dtype=dtype).contiguous(memory_format=fmt)

    if cudnn:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        conv = lambda x, w: F.conv3d(x, w, **case.conv_kwargs)  # noqa: E731
    else:
        conv = lambda x, w: jt.conv3d(x, w, **case.conv_kwargs, precision=precision)  # noqa: E731
    x, w = make(case.x_shape).requires_grad_(True), make(case.w_shape).requires_grad_(True)
    with torch.no_grad():
        y = conv(x, w)
    dy = make(y.shape)
    x_only, w_only = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    y_dx = conv(x_only, w.detach())
    y_dw = conv(x.detach(), w_only)

    def forward():
        with torch.no_grad():
            conv(x, w)

    return {
        "forward": event_median_ms(forward, reps, warmup=3),
        "grad_input": event_median_ms(lambda: torch.autograd.grad(y_dx, x_only, dy, retain_graph=True), reps, warmup=3),
        "grad_weight": event_median_ms(lambda: torch.autograd.grad(y_dw, w_only, dy, retain_graph=True), reps,
                                       warmup=3),
    }


def row(case, prec: str, family: str, args, device: str = "cuda") -> str:
    """One line of the table: each op's time, with the family and tile that ran it (ours) or "cuDNN"."""
    cudnn = family == "cudnn"
    if family in ("default", "cudnn"):
        os.environ.pop("JAXCONV3D_FAMILY", None)
    else:
        os.environ["JAXCONV3D_FAMILY"] = family
    t = op_times(case, prec, args.channels_last, args.reps, cudnn=cudnn, device=device)
    if cudnn:
        return "  ".join(f"{op} {t[op]:7.3f} (cuDNN)" for op in t)
    dtype, precision = DTYPES[prec]
    x_shape, w_shape, layout = case.x_shape, case.w_shape, "NCDHW"
    if args.channels_last:  # what the front asks for channels-last tensors: explain's NDHWC / DHWIO shapes
        x_shape, w_shape = (x_shape[0], *x_shape[2:], x_shape[1]), (*w_shape[2:], w_shape[1], w_shape[0])
        layout = "NDHWC"
    plan = jaxconv3d.explain(x_shape, w_shape, **case.conv_kwargs, precision=precision, layout=layout,
                             dtype=str(dtype).replace("torch.", ""), device=device)
    return "  ".join(f"{op} {t[op]:7.3f} ({plan[op]['family']}: {plan[op]['tile']})" for op in t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", help="comma-separated suite configuration names")
    ap.add_argument("--precision", default="fp32,tf32,bf16,fp16")
    ap.add_argument("--family", default="default",
                    help="comma-separated: default, a family to force, or cudnn (torch's F.conv3d)")
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
                print(f"{name:10s} {prec:5s} {family:14s} {row(case, prec, family, args)}", flush=True)
    os.environ.pop("JAXCONV3D_FAMILY", None)


if __name__ == "__main__":
    main()
