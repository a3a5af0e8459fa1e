"""Kernel by kernel GPU time of one forward+backward step through the torch front (torch.profiler), next to the
step's CUDA-event time: where a step's time goes, and how much of it is not kernels.

    scripts/py scripts/step_kernels.py kb54:bf16:cl kb54:fp32:ncdhw depthwise:bf16:cl:bias

Each argument is CONFIG:PRECISION:LAYOUT[:bias] (a suite configuration; fp32 or bf16; cl or ncdhw). Needs a GPU.
"""

from __future__ import annotations

import collections
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import jaxconv3d.torch as jt
from jaxconv3d import workloads
from op_times import median_ms  # scripts/ is on the path when run as a script

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def step_kernels(case, dtype: torch.dtype, channels_last: bool, bias: bool, steps: int = 5) -> None:
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    gen = torch.Generator(device="cuda").manual_seed(0)

    def make(shape, scale=1.0):
        return (torch.randn(shape, generator=gen, device="cuda", dtype=dtype) * scale).contiguous(memory_format=fmt)

    x = make(case.x_shape).requires_grad_(True)
    w = make(case.w_shape, 0.1).requires_grad_(True)
    b = torch.randn(case.out_channels, device="cuda", dtype=dtype).requires_grad_(True) if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    with torch.no_grad():
        dy = make(jt.conv3d(x, w, b, **case.conv_kwargs).shape)

    def step():
        return torch.autograd.grad(jt.conv3d(x, w, b, **case.conv_kwargs), leaves, dy)

    step_ms = median_ms(step, 10)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    ms, calls = collections.defaultdict(float), collections.Counter()
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            ms[ev.name] += ev.device_time_total / 1e3 / steps
            calls[ev.name] += 1
    print(f"== {case.name} {dtype} {'cl' if channels_last else 'ncdhw'} bias={bias}: step (CUDA events, median of "
          f"10) {step_ms:.3f} ms; kernels per step:")
    for name, t in sorted(ms.items(), key=lambda kv: -kv[1]):
        print(f"   {t:8.3f} ms  x{calls[name] // steps}  {name[:150]}")
    print(f"   {sum(ms.values()):8.3f} ms  total kernel time")


def main() -> None:
    cases = {c.name: c for c in workloads.load_suite()[0]}
    for spec in sys.argv[1:]:
        name, prec, layout, *rest = spec.split(":")
        step_kernels(cases[name], DTYPES[prec], layout == "cl", rest == ["bias"])


if __name__ == "__main__":
    main()
