"""Every kernel of 30 back-to-back calls of the bench's own pass functions (`workloads.pass_functions`), for any
implementation and configuration of the suite: each kernel's median time, the gaps between consecutive kernels and
the span of a call. CUPTI (through torch.profiler) records every launch in the process, so XLA's kernels show too.
With dependent launches a kernel's recorded time includes its wait for the one before it (its blocks start early):
per-kernel times then overlap; the span is exact.

    scripts/py scripts/pass_kernels.py depthwise bf16,fp32 ours:jax,ours:jax:cl fwd,fwd_bwd
"""

import collections
import statistics
import sys

import jax
import torch
from torch.profiler import ProfilerActivity, profile

from jaxconv3d import workloads as wl

CALLS = 30


def kernels(fn, ops) -> list[tuple[float, float, str]]:
    """(start, end, name) of every GPU kernel of CALLS calls of fn(ops), after five untimed calls."""

    def sync(r):
        jax.block_until_ready(r)
        torch.cuda.synchronize()

    for _ in range(5):
        r = fn(ops)
    sync(r)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            r = fn(ops)
        sync(r)
    return sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA)


def report(title: str, ev: list[tuple[float, float, str]]) -> None:
    per_call = max(1, len(ev) // CALLS)
    print(f"== {title}: {len(ev)} kernels ({per_call} a call)")
    times = collections.defaultdict(list)
    for s, e, n in ev:
        times[n[:90]].append(e - s)
    for n, v in times.items():
        print(f"   {statistics.median(v):7.2f} us x{len(v) / CALLS:.1f}  {n}")
    gaps = collections.defaultdict(list)
    for i in range(len(ev) - 1):
        gaps[i % per_call].append(ev[i + 1][0] - ev[i][1])
    print("   gap after kernel i (median us):", [round(statistics.median(v), 2) for _, v in sorted(gaps.items())])
    busy = sum(e - s for s, e, _ in ev) / CALLS
    print(f"   span {(ev[-1][1] - ev[0][0]) / CALLS:.1f} us a call, kernels busy {busy:.1f}")


def main(config: str, precisions: str, impls: str, passes: str) -> None:
    case = {c.name: c for c in wl.load_suite()[0]}[config]
    dev = jax.devices()[0]
    for name in precisions.split(","):
        prec = wl.PRECISIONS[name]
        base = wl.random_operands(case, prec.torch_dtype, torch.device("cuda"), 0)
        for impl in wl.IMPLEMENTATIONS:
            if impl.label not in impls.split(","):
                continue
            ops = (wl.torch_operands(base, torch.device("cuda"), impl.channels_last) if impl.framework == "torch"
                   else wl.jax_operands(base, dev, impl.channels_last))
            for pas, fn in wl.pass_functions(impl, impl.conv(case, prec)).items():
                if pas in passes.split(","):
                    report(f"{config} {name} {impl.label} {pas}", kernels(fn, ops))


if __name__ == "__main__":
    main(*sys.argv[1:5])
