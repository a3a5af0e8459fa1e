"""Host latency inside the bench: ours:torch:cl and cuDNN channels_last_3d forward+backward timed by the bench's own
machinery (every implementation interleaved, results checked), each call instrumented: host time to dispatch the
forward and the backward, and the GPU time between CUDA events recorded at the same points.

    scripts/py scripts/bench_host_latency.py kb54 bf16 [--min-loop-ms 1.0]

Printed per call: host forward, host backward, GPU start -> after the forward's launch, -> after the backward's
launch (ms). Needs a GPU. docs/perf.md v15 reads it with 1 ms loops (the reason the bench now loops >= 5 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jaxconv3d import bench, timing, workloads
from jaxconv3d.bench_check import reference_results

INSTRUMENTED = ("jaxconv3d_torch_ndhwc", "torch_ndhwc")  # ours:torch:cl and cuDNN channels_last_3d


def instrumented(conv, tag: str, records: list):
    """A forward+backward pass (torch_forward_and_grads' result) that records its host and GPU timeline."""

    def fn(ops):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        t0 = time.perf_counter()
        events[0].record()
        y = conv(ops.x, ops.w, ops.b)
        t1 = time.perf_counter()
        events[1].record()
        leaves = (ops.x, ops.w, ops.b)
        grads = iter(torch.autograd.grad(y, [t for t in leaves if t is not None and t.requires_grad], ops.dy))
        result = (y, *(next(grads) if t is not None and t.requires_grad else None for t in leaves))
        t2 = time.perf_counter()
        events[2].record()
        records.append((tag, t0, t1, t2, events))
        return result

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("precision", choices=sorted(workloads.PRECISIONS))
    parser.add_argument("--min-loop-ms", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=12)
    args = parser.parse_args()
    case = {c.name: c for c in workloads.load_suite()[0]}[args.config]
    precision = workloads.PRECISIONS[args.precision]
    device = workloads.detect_device()
    timer = timing.LoopTimer(device.torch_device, min_loop_ms=args.min_loop_ms)
    sets = timing.input_set_count(case, precision, timing.l2_cache_bytes(device.torch_device))
    generated = [workloads.random_operands(case, precision.torch_dtype, device.torch_device,
                                           workloads.case_seed(0, case.name, str(i))) for i in range(sets)]
    references = [reference_results(case, ops) for ops in generated]
    records: list = []
    for subset in ("all", "ours_cl_only"):
        units = bench.make_units(case, precision, generated, device)
        if subset != "all":
            units = [u for u in units if u.impl.key == INSTRUMENTED[0]]
        for u in units:
            if u.impl.key in INSTRUMENTED and u.pass_name == "fwd_bwd":
                u.fn = instrumented(u.impl.conv(case, precision), u.impl.label, records)
        records.clear()
        with workloads.cudnn_settings(precision):
            bench.measure_units(units, timer, references, args.reps, 0)
        torch.cuda.synchronize()
        print(f"--- {subset}: last 24 instrumented calls: host fwd, host bwd, gpu ev0->ev1, ev1->ev2 (ms)")
        for tag, t0, t1, t2, ev in records[-24:]:
            times = ((t1 - t0) * 1e3, (t2 - t1) * 1e3, ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2]))
            print(f"   {tag:14s}" + "  ".join(f"{v:7.3f}" for v in times))
        for u in units:
            if u.samples_ms and u.pass_name == "fwd_bwd":
                print(f"  {u.impl.label:14s} fwd_bwd median {statistics.median(u.samples_ms):.3f}")


if __name__ == "__main__":
    main()
