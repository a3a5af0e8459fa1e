"""Kernel by kernel GPU time of one forward+backward step through the torch front (torch.profiler), next to the
step's CUDA-event time: where a step's time goes, and how much of it is not kernels.

    scripts/py scripts/step_kernels.py kb54:bf16:cl kb54:fp32:ncdhw depthwise:bf16:cl:bias

Each argument is CONFIG:PRECISION:LAYOUT[:bias] (a suite configuration; fp32 or bf16; cl or ncdhw). Needs a GPU.
"""
import sys, collections, statistics
import torch
from torch.profiler import profile, ProfilerActivity
import jaxconv3d.torch as jt
from jaxconv3d import workloads

cases = {c.name: c for c in workloads.load_suite()[0]}
DT = {"fp32": torch.float32, "bf16": torch.bfloat16}

def run(name, prec, cl, steps=5, bias=False):
    case = cases[name]
    fmt = torch.channels_last_3d if cl else torch.contiguous_format
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda s: torch.randn(s, generator=g, device="cuda", dtype=DT[prec]).contiguous(memory_format=fmt)
    x = mk(case.x_shape).requires_grad_(True); w = (mk(case.w_shape) * 0.1).requires_grad_(True)
    b = torch.randn(case.out_channels, device="cuda", dtype=DT[prec]).requires_grad_(True) if bias else None
    conv = lambda: jt.conv3d(x, w, b, **case.conv_kwargs)
    with torch.no_grad():
        dy = mk(conv().shape)
    leaves = [t for t in (x, w, b) if t is not None]
    step = lambda: torch.autograd.grad(conv(), leaves, dy)
    for _ in range(3): step()
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); step(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps): step()
        torch.cuda.synchronize()
    agg = collections.defaultdict(float); cnt = collections.Counter()
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            agg[ev.name] += ev.device_time_total / 1000.0 / steps; cnt[ev.name] += 1
    print(f"== {name} {prec} {'cl' if cl else 'ncdhw'} bias={bias}: step (CUDA events, median of 10) {statistics.median(ts):.3f} ms; kernels per step:")
    tot = 0
    for k, v in sorted(agg.items(), key=lambda kv: -kv[1]):
        tot += v
        print(f"   {v:8.3f} ms  x{cnt[k]//steps}  {k[:150]}")
    print(f"   {tot:8.3f} ms  total kernel time")

for spec in sys.argv[1:]:
    parts = spec.split(":")
    run(parts[0], parts[1], parts[2] == "cl", bias=len(parts) > 3 and parts[3] == "bias")
