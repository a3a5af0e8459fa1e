"""Host latency inside the bench: ours:torch:cl and cuDNN channels_last_3d forward+backward timed by the bench's own
machinery (every implementation interleaved, results checked), each call instrumented: host time to dispatch the
forward and the backward, and the GPU time between CUDA events recorded at the same points.

    scripts/py scripts/bench_host_latency.py kb54 bf16

Printed per call: host forward, host backward, GPU start -> after forward launch, -> after backward launch (ms).
Needs a GPU. docs/perf.md v15 reads it (the reason the bench loops at least 5 ms).
"""
import statistics, sys, time
import torch
from jaxconv3d import bench, workloads, timing
from jaxconv3d.bench_check import reference_results
from jaxconv3d.workloads import torch_forward_and_grads

name, prec = sys.argv[1], sys.argv[2]
case = {c.name: c for c in workloads.load_suite()[0]}[name]
precision = workloads.PRECISIONS[prec]
device = workloads.detect_device()
timer = timing.LoopTimer(device.torch_device)
n = timing.input_set_count(case, precision, timing.l2_cache_bytes(device.torch_device))
gen = [workloads.random_operands(case, precision.torch_dtype, device.torch_device, workloads.case_seed(0, case.name, str(i))) for i in range(n)]
refs = [reference_results(case, ops) for ops in gen]
rec = []

def instrumented(conv, tag):
    def fn(ops):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        t0 = time.perf_counter(); ev[0].record()
        y = conv(ops.x, ops.w, ops.b)
        t1 = time.perf_counter(); ev[1].record()
        leaves = [t for t in (ops.x, ops.w, ops.b) if t is not None and t.requires_grad]
        g = torch.autograd.grad(y, leaves, ops.dy)
        t2 = time.perf_counter(); ev[2].record()
        rec.append((tag, t0, t1, t2, ev))
        return (y, *g) if ops.b is not None else (y, *g, None)
    return fn

for subset in ("all", "ours_cl_only"):
    units = bench.make_units(case, precision, gen, device)
    if subset != "all":
        units = [u for u in units if u.impl.key == "jaxconv3d_torch_ndhwc"]
    for u in units:
        if u.impl.key in ("jaxconv3d_torch_ndhwc", "torch_ndhwc") and u.pass_name == "fwd_bwd":
            u.fn = instrumented(u.impl.conv(case, precision), u.impl.label)
    rec.clear()
    with workloads.cudnn_settings(precision):
        bench.measure_units(units, timer, refs, 12, 0)
    torch.cuda.synchronize()
    rows = [(tag, (t1 - t0) * 1e3, (t2 - t1) * 1e3, ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])) for tag, t0, t1, t2, ev in rec[-24:]]
    print(f"--- {subset}: last 24 instrumented calls (ours:cl and cudnn:cl interleaved): host fwd, host bwd, gpu ev0->ev1, ev1->ev2 (ms)")
    for r in rows: print(f"   {r[0]:10s}" + "  ".join(f"{v:7.3f}" for v in r[1:]))
    for u in units:
        if u.samples_ms and u.pass_name == "fwd_bwd":
            print(f"  {u.impl.label:14s} {u.pass_name:7s} median {statistics.median(u.samples_ms):.3f}")
