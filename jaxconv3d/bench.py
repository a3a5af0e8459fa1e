"""`jaxconv3d bench`: time ours (through torch in NCDHW and channels_last_3d, and through JAX) against torch/cuDNN
(NCDHW and channels_last_3d) and XLA, forward and forward+backward.

Every implementation is timed by one timer (`timing.LoopTimer`): loops of back-to-back calls between two full
synchronisations (JAX's `block_until_ready`, then `torch.cuda.synchronize()`), read on the host clock; a sample is
an untimed call, a loop of k calls and one of 2k, (T(2k) - T(k)) / k a call, one k for every implementation of a
pass (the fastest's k-loop lasts >= 2.5 ms). Each implementation is warmed
up first (jit compilation, cudnn.benchmark's algorithm choice); then each repetition times every (implementation,
pass) once, in an order shuffled per repetition with a fixed seed (`interleaved_order`), so that clock or thermal
drift spreads over everyone. Each figure is the median over the repetitions. The last result of every timed loop
is compared with a float32 reference (`bench_check`) before its time is reported: a wrong result becomes an error
row (`wrong_result` in the JSON), never a time.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import textwrap
import time
from typing import Any, Callable, Sequence

import jax

from ._plan import explain, logical_to_ndhwc as ndhwc_shapes
from . import card_rates
from .plot import geomean
from .bench_check import BOUNDS, REFERENCE, ResultCheck, reference_results, result_errors
from .report import Progress, format_ms, format_table, say, write_json
from .timing import LoopTimer, input_set_count, l2_cache_bytes
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

WARMUP_CALLS = 3
INTERLEAVING = "every repetition times each (implementation, pass) once, in an order shuffled with a fixed seed"


# ---- one (implementation, pass) being timed


@dataclasses.dataclass
class Unit:
    """One implementation's pass on one case: its function, operands, samples and result check."""

    impl: Implementation
    pass_name: str
    fn: Callable[[Operands], Any]
    input_sets: Sequence[Operands]
    check: ResultCheck
    calls: int = 0  # per timed loop
    next_set: int = 0  # where the next loop starts in the rotation of input sets
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    loop_samples_ms: list[float] = dataclasses.field(default_factory=list)  # T(2k) / 2k beside each sample
    fallback_samples: int = 0  # samples that are the loop estimate (host noise outweighed k calls: LoopTimer.sample)
    error: str | None = None
    wrong_result: bool = False

    def record(self) -> dict[str, Any]:
        """The JSON entry: a median only for a unit whose every timed loop gave a checked, correct result."""
        entry: dict[str, Any] = {}
        error = self.error or (None if self.samples_ms and self.check.passed else "no checked result")
        if error is None:
            entry.update(median_ms=statistics.median(self.samples_ms), samples_ms=self.samples_ms,
                         loop_median_ms=statistics.median(self.loop_samples_ms))
            if self.fallback_samples:
                entry.update(fallback_samples=self.fallback_samples)
        else:
            entry.update(error=error, wrong_result=self.wrong_result)
        if self.calls:
            entry.update(calls_per_loop=self.calls)
        entry.update(check=self.check.record())
        return entry


def interleaved_order(count: int, rep: int, seed: int) -> list[int]:
    """The order in which repetition `rep` times `count` units: a shuffle seeded by (seed, rep), reproducible."""
    order = list(range(count))
    random.Random(f"{seed}/{rep}").shuffle(order)
    return order


def time_once(unit: Unit, timer: LoopTimer, references: Sequence[dict]) -> None:
    """One timed loop of `unit`, then the check of its last result; errors are recorded, not raised."""
    first = unit.next_set
    try:
        sample = timer.sample(unit.fn, unit.input_sets, unit.calls, first)
    except Exception as error:  # noqa: BLE001 - one failing implementation must not end the run
        unit.error = f"{type(error).__name__}: {error}"
        return
    result = sample.result
    unit.next_set = (first + sample.calls) % len(unit.input_sets)
    last = (first + sample.calls - 1) % len(unit.input_sets)
    try:
        errors = result_errors(result, unit.pass_name, references[last], timer.torch_device, unit.impl)
    except ValueError as error:  # a result of the wrong shape, or a missing gradient: wrong
        unit.check.failure = str(error)
    except Exception as error:  # noqa: BLE001 - the comparison itself failed (out of memory, ...): unchecked
        unit.error = f"result check failed: {type(error).__name__}: {error}"
        return
    else:
        unit.check.add(errors)
    if not unit.check.passed:
        unit.wrong_result, unit.error = True, f"wrong result: {unit.check.failure_text()}"
        return
    unit.samples_ms.append(sample.ms)
    unit.loop_samples_ms.append(sample.loop_ms)
    unit.fallback_samples += sample.fallback


def warm_up(unit: Unit, timer: LoopTimer) -> None:
    """Compiles / lets cudnn.benchmark choose, then picks the calls per loop (the same rule for every unit)."""
    try:
        for i in range(WARMUP_CALLS):
            timer.synchronize(unit.fn(unit.input_sets[i % len(unit.input_sets)]))
        unit.calls = timer.calls_per_loop(unit.fn, unit.input_sets)
    except Exception as error:  # noqa: BLE001
        unit.error = f"{type(error).__name__}: {error}"


def share_calls(units: Sequence[Unit]) -> None:
    """Every unit of a pass loops the same number of calls: the most any of them asked for (the fastest
    implementation's count, so even its loop lasts >= min_loop_ms). With a count per implementation, one that
    crosses the threshold gets its first call's host latency amortised over more calls than a slower one: at
    unet_64 bf16 forward+backward, cuDNN's 0.91 ms loop ran 2 calls and ours (1.4 ms) 1."""
    for pass_name in {unit.pass_name for unit in units}:
        same = [unit for unit in units if unit.pass_name == pass_name and unit.error is None and unit.calls]
        calls = max((unit.calls for unit in same), default=0)
        for unit in same:
            unit.calls = calls


def measure_units(
    units: Sequence[Unit],
    timer: LoopTimer,
    references: Sequence[dict],
    reps: int,
    seed: int,
    on_rep: Callable[[], None] = lambda: None,
) -> None:
    """Warms up every unit, gives each pass one loop length (`share_calls`), then times them interleaved, `reps`
    times, each loop's result checked."""
    for unit in units:
        warm_up(unit, timer)
    share_calls(units)
    for rep in range(reps):
        for index in interleaved_order(len(units), rep, seed):
            if units[index].error is None:
                time_once(units[index], timer, references)
        on_rep()


# ---- one case in one precision


def make_units(case: ConvCase, precision: Precision, generated: Sequence[Operands], device: Device) -> list[Unit]:
    input_sets = {
        ("torch", False): [torch_operands(ops, device.torch_device) for ops in generated],
        ("torch", True): [torch_operands(ops, device.torch_device, channels_last=True) for ops in generated],
        ("jax", False): [jax_operands(ops, device.jax_device) for ops in generated],
        ("jax", True): [jax_operands(ops, device.jax_device, channels_last=True) for ops in generated],
    }
    jax.block_until_ready([(ops.x, ops.w, ops.b, ops.dy) for ops in input_sets["jax", False] + input_sets["jax", True]])
    units = []
    for impl in IMPLEMENTATIONS:
        functions = pass_functions(impl, impl.conv(case, precision))
        for pass_name, fn in functions.items():
            sets = input_sets[impl.framework, impl.channels_last]
            units.append(Unit(impl, pass_name, fn, sets, ResultCheck(BOUNDS[precision.name])))
    return units


def best_of(entries: dict[str, dict], keys: Sequence[str]) -> tuple[str | None, float | None]:
    timed = [(entries[k]["median_ms"], k) for k in keys if "median_ms" in entries[k]]
    return (min(timed)[1], min(timed)[0]) if timed else (None, None)


def suite_baseline(case: ConvCase, precision: str, pass_name: str) -> tuple[float | None, float | None]:
    """(fastest of torch NCDHW, torch NDHWC and XLA, floor) from suite.json's H100 timings, when recorded."""
    recorded = (case.baseline_h100 or {}).get(precision)
    if not recorded:
        return None, None
    times = [recorded.get(f"{impl}_{pass_name}_ms") for impl in ("torch", "torch_ndhwc", "jax")]
    times = [t for t in times if t is not None]
    return (min(times) if times else None), recorded.get(f"floor_{pass_name}_ms")


def summarize(case: ConvCase, precision: Precision, times: dict[str, dict], rates: dict | None) -> dict[str, dict]:
    """Per pass: the best of ours and of the references, their ratio, suite.json's H100 figures, and the floor on
    this card from the run's measured rates (card_rates.py)."""
    summary = {}
    for pass_name in PASSES:
        entries = {impl.key: times[impl.key][pass_name] for impl in IMPLEMENTATIONS}
        best_ours, best_ours_ms = best_of(entries, [impl.key for impl in IMPLEMENTATIONS if impl.ours])
        best_ref, best_ref_ms = best_of(entries, [impl.key for impl in IMPLEMENTATIONS if not impl.ours])
        baseline, floor = suite_baseline(case, precision.name, pass_name)
        card_floor = card_rates.floor_ms(case, precision, pass_name, rates)
        summary[pass_name] = dict(
            best_ours=best_ours,
            best_ours_ms=best_ours_ms,
            best_reference=best_ref,
            best_reference_ms=best_ref_ms,
            speedup=best_ref_ms / best_ours_ms if best_ours_ms and best_ref_ms else None,
            h100_best_reference_ms=baseline,
            h100_floor_ms=floor,
            card_floor_ms=card_floor,
            ours_over_card_floor=best_ours_ms / card_floor if best_ours_ms and card_floor else None,
        )
    return summary


def bench_case(
    case: ConvCase,
    precision: Precision,
    device: Device,
    timer: LoopTimer,
    l2_bytes: int,
    reps: int,
    seed: int,
    progress: Progress,
    rates: dict | None,
) -> dict[str, Any]:
    """Times every implementation's two passes on one case; a failing or wrong implementation is recorded."""
    set_count = input_set_count(case, precision, l2_bytes)
    generated = [
        random_operands(case, precision.torch_dtype, device.torch_device, case_seed(seed, case.name, str(i)))
        for i in range(set_count)
    ]
    units = make_units(case, precision, generated, device)
    try:
        references = [reference_results(case, ops) for ops in generated]
    except Exception as error:  # noqa: BLE001 - then nothing can be checked, so nothing is timed
        references = []
        for unit in units:
            unit.error = f"no reference ({type(error).__name__}: {error})"
    with cudnn_settings(precision):
        label = f"{case.name} {precision.name}"
        measure_units(units, timer, references, reps, seed, on_rep=lambda: progress.update(label))
    times: dict[str, dict[str, Any]] = {}
    for unit in units:
        times.setdefault(unit.impl.key, {})[unit.pass_name] = unit.record()
    del units, references, generated
    result = dict(
        config=case.name,
        shape=case.describe(),
        problem=case.shape_record(),
        precision=precision.name,
        input_sets=set_count,
        families=case_families(case, precision, device),
        times=times,
        summary=summarize(case, precision, times, rates),
    )
    return result


# ---- the bench command


def case_families(case: ConvCase, precision: Precision, device: Device) -> dict:
    """The dispatcher's choice per operation ({op: {family, tile, layout, workspace_bytes, rule}}) for NCDHW and
    channels-last callers (they differ only on the CPU, whose kernels take either layout)."""
    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups,
              dtype=precision.dtype_name, precision=precision.ours, device=device.torch_device)
    return {
        "NCDHW": explain(case.x_shape, case.w_shape, **kw),
        "NDHWC": explain(*ndhwc_shapes(case.x_shape, case.w_shape), **kw, layout="NDHWC"),
    }


def speedup_summary(results: list[dict]) -> dict[str, dict[str, dict]]:
    """{precision: {pass: {geomean, min, configs, worst_over_floor}}}: the geomean and the minimum over configurations
    of best reference / best of ours, and the largest best-of-ours / floor-on-this-card (None without floors)."""
    out: dict[str, dict[str, dict]] = {}
    for result in results:
        for pass_name, summary in result["summary"].items():
            entry = out.setdefault(result["precision"], {}).setdefault(
                pass_name, dict(speedups=[], over_floor=[]))
            if summary.get("speedup"):
                entry["speedups"].append(summary["speedup"])
            if summary.get("ours_over_card_floor"):
                entry["over_floor"].append(summary["ours_over_card_floor"])
    return {
        precision: {
            pass_name: dict(
                geomean=geomean(e["speedups"]) if e["speedups"] else None,
                min=min(e["speedups"], default=None),
                configs=len(e["speedups"]),
                worst_over_floor=max(e["over_floor"], default=None),
            )
            for pass_name, e in passes.items()
        }
        for precision, passes in out.items()
    }


def _summary_table(summary: dict[str, dict[str, dict]]) -> str:
    rows = []
    for precision, passes in summary.items():
        for pass_name, e in passes.items():
            if e["geomean"] is None:
                continue
            worst = "-" if e["worst_over_floor"] is None else f"{e['worst_over_floor']:.2f}x"
            rows.append([precision, pass_name.replace("_", "+"), f"{e['geomean']:.2f}x", f"{e['min']:.2f}x",
                         str(e["configs"]), worst])
    return format_table(["prec", "pass", "geomean ref/ours", "min", "configs", "worst ours/floor"], rows,
                        left_columns=2)


def _bench_table(results: list[dict], device: Device) -> str:
    headers = ["config", "prec", "pass", *(impl.label for impl in IMPLEMENTATIONS), "ref/ours"]
    if device.is_gpu:
        headers += ["H100 best ref", "H100 floor", "floor", "ours/floor"]
    rows = []
    for result in results:
        for pass_name in PASSES:
            summary = result["summary"][pass_name]
            entries = [result["times"][impl.key][pass_name] for impl in IMPLEMENTATIONS]
            cells = [
                format_ms(e["median_ms"]) if "median_ms" in e else ("WRONG" if e.get("wrong_result") else "error")
                for e in entries
            ]
            speedup = "-" if summary["speedup"] is None else f"{summary['speedup']:.2f}x"
            row = [result["config"], result["precision"], pass_name.replace("_", "+"), *cells, speedup]
            if device.is_gpu:
                ratio = summary.get("ours_over_card_floor")
                row += [format_ms(summary["h100_best_reference_ms"]), format_ms(summary["h100_floor_ms"]),
                        format_ms(summary.get("card_floor_ms")), "-" if ratio is None else f"{ratio:.2f}x"]
            rows.append(row)
    return format_table(headers, rows, left_columns=3)


def run_bench(
    configs: Sequence[str] | None, suite: bool, precisions: Sequence[str] | None, json_path: str, reps: int, seed: int
) -> int:
    """Times every case x precision; prints the table, writes JSON. Returns 1 if one of ours failed or was wrong."""
    device = detect_device()
    cases, source = select_cases(configs, suite or not configs, device)
    chosen = [PRECISIONS[name] for name in precisions or (GPU_PRECISIONS if device.is_gpu else CPU_BENCH_PRECISIONS)]
    timer = LoopTimer(device.torch_device)
    l2_bytes = l2_cache_bytes(device.torch_device)
    say(run_header("bench", device))
    say(f"configurations: {source}" + ("" if device.is_gpu else ", scaled down for the CPU:"))
    for case in cases:
        say(f"  {case.name:<18} {case.describe()}")
    method = (
        f"timing: median of {reps} repetitions after {WARMUP_CALLS} warm-up calls; {timer.description}; "
        f"{INTERLEAVING}; operands rotate among input sets sized from L2 = {l2_bytes / 2**20:.0f} MiB; "
        f"every timed loop's last result is checked against {REFERENCE}"
    )
    say(textwrap.fill(method, width=118, subsequent_indent="  "))
    rates = card_rates.measure(device.torch_device, chosen) if device.is_gpu else None
    if rates:
        gemm = ", ".join(f"{k} {v:.0f}" for k, v in rates["gemm_tflop_s"].items())
        say(f"this card: copy {rates['copy_tb_s']:.2f} TB/s, GEMM {gemm} TFLOP/s ({rates['method']})")

    started = time.perf_counter()
    results = []
    with Progress(len(cases) * len(chosen) * reps, "bench") as progress:
        for case in cases:
            for precision in chosen:
                results.append(bench_case(case, precision, device, timer, l2_bytes, reps, seed, progress, rates))
    print(_bench_table(results, device))
    say(
        "ms per call; WRONG = result over the check's bound\n"
        "ref/ours = fastest reference (torch, torch:cl, xla, xla:cl) / fastest of ours (ours:torch, ours:torch:cl,"
        " ours:jax, ours:jax:cl); > 1: ours faster;\n:cl = channels_last_3d tensors (torch) or NDHWC / DHWIO arrays (jax)"
    )
    if device.is_gpu:
        say("H100 columns: suite.json's fastest of the same three references, and the floor, on an H100;\n"
            "floor: the same floor from this card's rates measured in this run; ours/floor: fastest of ours / floor")
    summary = speedup_summary(results)
    print(_summary_table(summary))
    errors = [
        (result["config"], result["precision"], key, pass_name, entry["error"])
        for result in results
        for key, passes in result["times"].items()
        for pass_name, entry in passes.items()
        if "error" in entry
    ]
    for config, precision, key, pass_name, message in errors:
        print(f"error: {config} {precision} {key} {pass_name}: {message}")
    say(f"bench took {time.perf_counter() - started:.1f} s")
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
            card_rates=rates,
            speedup_summary=summary,
            timing=dict(
                method=timer.description,
                min_loop_ms=timer.min_loop_ms,
                max_loop_calls=timer.max_calls,
                interleaving=INTERLEAVING,
                l2_cache_bytes=l2_bytes,
                result_check=REFERENCE,
                bounds={p.name: BOUNDS[p.name] for p in chosen},
            ),
            implementations={
                impl.key: dict(
                    label=impl.label, framework=impl.framework, ours=impl.ours, channels_last=impl.channels_last
                )
                for impl in IMPLEMENTATIONS
            },
            results=results,
        ),
    )
    ours_keys = {impl.key for impl in IMPLEMENTATIONS if impl.ours}
    return 1 if any(key in ours_keys for _, _, key, _, _ in errors) else 0
