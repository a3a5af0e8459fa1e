"""`jaxconv3d bench`: time our two fronts against torch/cuDNN (NCDHW and channels_last_3d) and XLA.

Timing: torch calls on a GPU are timed with CUDA events; JAX calls by the wall clock after `block_until_ready`, so
they include Python dispatch (tens of microseconds); on the CPU everything uses `time.perf_counter`. Each figure is
the median of `--reps` calls after warm-up calls (which compile the jit and let cudnn.benchmark pick algorithms).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import torch

from ._plan import explain, logical_to_ndhwc as ndhwc_shapes
from .report import Progress, format_ms, format_table, write_json
from .workloads import (
    CPU_BENCH_PRECISIONS,
    GPU_PRECISIONS,
    IMPLEMENTATIONS,
    PASSES,
    PRECISIONS,
    ConvCase,
    Device,
    Implementation,
    Operands,
    Precision,
    case_seed,
    cudnn_settings,
    detect_device,
    environment_info,
    jax_operands,
    pass_functions,
    random_operands,
    run_header,
    select_cases,
    torch_operands,
)

L2_BYTES = 50 * 2**20  # H100 L2 cache
MAX_INPUT_SETS = 16
WARMUP_CALLS = 3


# ---- timing


def input_set_count(case: ConvCase, precision: Precision) -> int:
    """How many operand sets to rotate through, so that no call finds its inputs left warm in L2 by the previous
    call: one when x and w alone exceed L2, else at least two, and enough that a cycle's x, w, dy exceed 2 x L2."""
    itemsize = torch.empty((), dtype=precision.torch_dtype).element_size()
    p = case.problem
    forward_inputs = itemsize * (math.prod(p.x_shape) + math.prod(p.w_shape))
    if forward_inputs >= L2_BYTES:
        return 1
    per_set = forward_inputs + itemsize * math.prod(p.y_shape)  # + dy, read by the backward pass
    return min(MAX_INPUT_SETS, max(2, math.ceil(2 * L2_BYTES / per_set)))


def time_with_cuda_events(fn: Callable, input_sets: Sequence[Operands], reps: int) -> list[float]:
    """GPU milliseconds between events recorded on torch's current stream around each call."""
    for i in range(WARMUP_CALLS):
        fn(input_sets[i % len(input_sets)])
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for i, (start, end) in enumerate(events):
        start.record()
        fn(input_sets[i % len(input_sets)])
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def time_with_wall_clock(
    fn: Callable, input_sets: Sequence[Operands], reps: int, wait: Callable[[Any], Any]
) -> list[float]:
    """Milliseconds from the call until `wait(result)` returns (block_until_ready for JAX)."""
    for i in range(WARMUP_CALLS):
        wait(fn(input_sets[i % len(input_sets)]))
    samples = []
    for i in range(reps):
        start = time.perf_counter()
        wait(fn(input_sets[i % len(input_sets)]))
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def measure(impl: Implementation, fn: Callable, input_sets: Sequence[Operands], reps: int, device: Device):
    if impl.framework == "torch" and device.is_gpu:
        return time_with_cuda_events(fn, input_sets, reps)
    # torch on the CPU returns when done; JAX dispatches asynchronously.
    wait = jax.block_until_ready if impl.framework == "jax" else (lambda result: result)
    return time_with_wall_clock(fn, input_sets, reps, wait)


def timing_methods(device: Device) -> dict[str, str]:
    if not device.is_gpu:
        return {"torch": "time.perf_counter per call", "jax": "time.perf_counter until block_until_ready"}
    return {
        "torch": "CUDA events around each call on the current stream",
        "jax": "wall clock until block_until_ready (includes Python dispatch)",
    }



# ---- the bench command


def best_baselineformat_ms(case: ConvCase, precision: str, pass_name: str) -> tuple[float | None, float | None]:
    """(fastest of torch NCDHW, torch NDHWC and XLA, floor) from suite.json's H100 timings, when recorded."""
    recorded = (case.baseline_h100 or {}).get(precision)
    if not recorded:
        return None, None
    times = [recorded.get(f"{impl}_{pass_name}_ms") for impl in ("torch", "torch_ndhwc", "jax")]
    times = [t for t in times if t is not None]
    return (min(times) if times else None), recorded.get(f"floor_{pass_name}_ms")


def bench_case(case: ConvCase, precision: Precision, device: Device, reps: int, seed: int, progress: Progress):
    """Times every implementation's two passes on one case; a failing implementation is recorded, not fatal."""
    set_count = input_set_count(case, precision)
    generated = [
        random_operands(case, precision.torch_dtype, device.torch_device, case_seed(seed, case.name, str(i)))
        for i in range(set_count)
    ]
    input_sets = {
        ("torch", False): [torch_operands(ops, device.torch_device) for ops in generated],
        ("torch", True): [torch_operands(ops, device.torch_device, channels_last=True) for ops in generated],
        ("jax", False): [jax_operands(ops, device.jax_device) for ops in generated],
    }
    times: dict[str, dict[str, Any]] = {}
    with cudnn_settings(precision):
        for impl in IMPLEMENTATIONS:
            functions = pass_functions(impl, impl.make_conv(case, precision))
            for pass_name, fn in functions.items():
                try:
                    samples = measure(impl, fn, input_sets[impl.framework, impl.channels_last], reps, device)
                    entry = {"median_ms": statistics.median(samples), "samples_ms": samples}
                except Exception as error:  # noqa: BLE001 - one unsupported baseline must not end the run
                    entry = {"error": f"{type(error).__name__}: {error}"}
                times.setdefault(impl.key, {})[pass_name] = entry
                progress.update(f"{case.name} {precision.name} {impl.label} {pass_name}")
    del input_sets, generated

    summary = {}
    for pass_name in PASSES:
        medians = {impl: times[impl.key][pass_name].get("median_ms") for impl in IMPLEMENTATIONS}
        ours = [m for impl, m in medians.items() if impl.ours and m is not None]
        refs = [m for impl, m in medians.items() if not impl.ours and m is not None]
        best_ours, best_ref = min(ours, default=None), min(refs, default=None)
        baseline, floor = best_baselineformat_ms(case, precision.name, pass_name)
        summary[pass_name] = dict(
            best_ours_ms=best_ours,
            best_reference_ms=best_ref,
            speedup=best_ref / best_ours if best_ours and best_ref else None,
            h100_best_reference_ms=baseline,
            h100_floor_ms=floor,
        )
    return dict(
        config=case.name,
        shape=case.describe(),
        problem=case.shape_record(),
        precision=precision.name,
        input_sets=set_count,
        families=case_families(case, precision, device),
        times=times,
        summary=summary,
    )


def case_families(case: ConvCase, precision: Precision, device: Device) -> dict:
    """The dispatcher's choice per operation ({op: {family, tile, layout, workspace_bytes, rule}}) for NCDHW and
    channels-last callers (they differ only on the CPU, whose kernels take either layout)."""
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups,
              dtype=precision.dtype_name, precision=precision.ours, device=device.torch_device)
    return {
        "NCDHW": explain(case.x_shape, case.w_shape, **kw),
        "NDHWC": explain(*ndhwc_shapes(case.x_shape, case.w_shape), **kw, layout="NDHWC"),
    }


def _bench_table(results: list[dict], device: Device) -> str:
    headers = ["config", "prec", "pass", *(impl.label for impl in IMPLEMENTATIONS), "ref/ours"]
    if device.is_gpu:
        headers += ["H100 best ref", "H100 floor"]
    rows = []
    for result in results:
        for pass_name in PASSES:
            summary = result["summary"][pass_name]
            cells = [
                format_ms(result["times"][impl.key][pass_name].get("median_ms"))
                if "error" not in result["times"][impl.key][pass_name]
                else "error"
                for impl in IMPLEMENTATIONS
            ]
            speedup = "-" if summary["speedup"] is None else f"{summary['speedup']:.2f}x"
            row = [result["config"], result["precision"], pass_name.replace("_", "+"), *cells, speedup]
            if device.is_gpu:
                row += [format_ms(summary["h100_best_reference_ms"]), format_ms(summary["h100_floor_ms"])]
            rows.append(row)
    return format_table(headers, rows, left_columns=3)


def run_bench(
    configs: Sequence[str] | None, suite: bool, precisions: Sequence[str] | None, json_path: str, reps: int, seed: int
) -> int:
    """Times every case x precision; prints the table, writes JSON. Returns 1 if one of our fronts failed."""
    device = detect_device()
    cases, source = select_cases(configs, suite or not configs, device)
    chosen = [PRECISIONS[name] for name in precisions or (GPU_PRECISIONS if device.is_gpu else CPU_BENCH_PRECISIONS)]
    methods = timing_methods(device)
    print(run_header("bench", device))
    print(f"configurations: {source}" + ("" if device.is_gpu else ", scaled down for the CPU:"))
    for case in cases:
        print(f"  {case.name:<18} {case.describe()}")
    print(f"timing: median of {reps} calls after {WARMUP_CALLS} warm-up calls; operands rotate among several sets")
    print(f"  when x and w fit in L2 (input_sets in the JSON); torch: {methods['torch']}; jax: {methods['jax']}")

    started = time.perf_counter()
    results = []
    with Progress(len(cases) * len(chosen) * len(IMPLEMENTATIONS) * len(PASSES), "bench") as progress:
        for case in cases:
            for precision in chosen:
                results.append(bench_case(case, precision, device, reps, seed, progress))
    print(_bench_table(results, device))
    print(
        "ms per call; ref/ours = fastest reference (torch, torch:cl = channels_last_3d, xla) / fastest of ours;"
        " > 1: ours faster"
    )
    if device.is_gpu:
        print("H100 columns: suite.json's fastest of the same three references, and the floor, on an H100")
    errors = [
        (result["config"], result["precision"], key, pass_name, entry["error"])
        for result in results
        for key, passes in result["times"].items()
        for pass_name, entry in passes.items()
        if "error" in entry
    ]
    for config, precision, key, pass_name, message in errors:
        print(f"error: {config} {precision} {key} {pass_name}: {message}")
    print(f"bench took {time.perf_counter() - started:.1f} s")
    write_json(
        json_path,
        dict(
            command="bench",
            environment=environment_info(device),
            suite=source,
            cpu_scaled_down=not device.is_gpu,
            reps=reps,
            warmup_calls=WARMUP_CALLS,
            seed=seed,
            timing=methods,
            results=results,
        ),
    )
    ours_keys = {impl.key for impl in IMPLEMENTATIONS if impl.ours}
    return 1 if any(key in ours_keys for _, _, key, _, _ in errors) else 0
