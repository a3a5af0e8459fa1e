"""`jaxconv3d check`: both fronts against a float64 reference, operation by operation, in each precision.

For every configuration and precision, fresh random normal operands (x, w, b, dy) in the precision's dtype go
through `jaxconv3d.conv3d` under jax.jit and through `jaxconv3d.torch.conv3d`, giving forward, grad-input,
grad-weight and grad-bias. Each is compared with torch.nn.functional.conv3d + torch.autograd.grad run in float64 on
the CPU from the same (rounded) operands; that reference is itself cross-checked against
jax.lax.conv_general_dilated in float64. The two fronts run the same kernels, so their results must also be
bitwise identical.

Big (suite) problems are checked with batch <= 2, and their float64 reference is computed on a few output / input
channels spread over the channel range (see `reference_parts`); grad-weight keeps its full reduction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Sequence

import jax
import numpy as np
import torch

from .reference import ERROR_BOUNDS, MAX_ERROR_FACTOR, Error, bitwise_equal, error, to_numpy64  # noqa: F401
from .report import Progress, format_table, say, write_json
from .workloads import (
    COVERAGE_CASES,
    GPU_PRECISIONS,
    PRECISIONS,
    ConvCase,
    Device,
    Operands,
    Precision,
    case_seed,
    detect_device,
    environment_info,
    jax_forward_and_grads,
    jax_operands,
    lax_conv,
    ours_jax,
    ours_torch,
    random_operands,
    run_header,
    select_cases,
    torch_conv,
    torch_forward_and_grads,
    torch_operands,
)

CHECK_MAX_BATCH = 2
FULL_REFERENCE_MAX_FLOPS = 1e8  # above this, the float64 reference is computed on a few channels ...
REFERENCE_CHANNELS = 4  # ... this many (or groups), first and last included: see reference_parts
CPU_CHECK_PRECISIONS = ("fp32", "fp64", "bf16")
OPS = ("forward", "grad_input", "grad_weight", "grad_bias")  # the order of *_forward_and_grads' results


# ---- float64 references


@contextlib.contextmanager
def float64_enabled():
    """jax_enable_x64 on (without it JAX silently computes float64 in float32), restored afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def _spread(count: int, keep: int) -> np.ndarray:
    """All of 0..count-1, or `keep` indices spread over it, first and last included (so a kernel's first and last
    channel tiles are both seen)."""
    if count <= keep:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, keep).round().astype(np.int64))


def _take(t: torch.Tensor, index: tuple) -> torch.Tensor:
    return t[tuple(torch.as_tensor(i) if isinstance(i, np.ndarray) else i for i in index)]


ReferencePart = tuple[dict[str, tuple], ConvCase, Operands]  # {op: index into the full result}, sub-problem


def reference_parts(case: ConvCase, operands: Operands) -> list[ReferencePart]:
    """Sub-problems whose float64 results are the references of the full problem's results at given indices.

    Problems of at most FULL_REFERENCE_MAX_FLOPS: the whole problem. Bigger ones keep a few channels' work, and
    grad-weight keeps its full reduction over batch and positions:
    - groups > 1: groups are independent convolutions, so a few whole groups form a smaller grouped problem;
    - groups == 1: y[:, co], dw[co], db[co] need only the filters co (with all of x), and dx[:, ci] only the
      filters' input channels ci (with all of dy).
    """
    p = case.problem
    has_bias = operands.b is not None
    every = slice(None)
    if p.flops() <= FULL_REFERENCE_MAX_FLOPS or 1 < p.groups <= REFERENCE_CHANNELS:
        return [({op: () for op in OPS if op != "grad_bias" or has_bias}, case, operands)]
    if p.groups > 1:
        kept = _spread(p.groups, REFERENCE_CHANNELS)
        in_per_group, out_per_group = p.in_channels // p.groups, p.out_channels // p.groups
        ci = (kept[:, None] * in_per_group + np.arange(in_per_group)).ravel()
        co = (kept[:, None] * out_per_group + np.arange(out_per_group)).ravel()
        sub_case = dataclasses.replace(case, in_channels=ci.size, out_channels=co.size, groups=kept.size)
        sub_operands = Operands(
            x=_take(operands.x, (every, ci)),
            w=_take(operands.w, (co,)),
            b=_take(operands.b, (co,)) if has_bias else None,
            dy=_take(operands.dy, (every, co)),
        )
        index_by_op = {"forward": (every, co), "grad_input": (every, ci), "grad_weight": (co,)}
        return [(index_by_op | ({"grad_bias": (co,)} if has_bias else {}), sub_case, sub_operands)]
    co, ci = _spread(p.out_channels, REFERENCE_CHANNELS), _spread(p.in_channels, REFERENCE_CHANNELS)
    by_out_channel = Operands(
        x=operands.x,
        w=_take(operands.w, (co,)),
        b=_take(operands.b, (co,)) if has_bias else None,
        dy=_take(operands.dy, (every, co)),
    )
    out_ops = {"forward": (every, co), "grad_weight": (co,)} | ({"grad_bias": (co,)} if has_bias else {})
    by_in_channel = Operands(x=_take(operands.x, (every, ci)), w=_take(operands.w, (every, ci)), b=None, dy=operands.dy)
    return [
        (out_ops, dataclasses.replace(case, out_channels=co.size), by_out_channel),
        ({"grad_input": (every, ci)}, dataclasses.replace(case, in_channels=ci.size), by_in_channel),
    ]


def torch_reference(case: ConvCase, operands: Operands, ops: Sequence[str]) -> dict[str, np.ndarray]:
    """F.conv3d + autograd in float64 on the CPU; only the gradients in `ops` are computed."""

    def leaf(t: torch.Tensor | None, grad_op: str) -> torch.Tensor | None:
        return None if t is None else t.detach().double().requires_grad_(grad_op in ops)

    leaves = Operands(
        x=leaf(operands.x, "grad_input"),
        w=leaf(operands.w, "grad_weight"),
        b=leaf(operands.b, "grad_bias"),
        dy=operands.dy.detach().double(),
    )
    results = dict(zip(OPS, torch_forward_and_grads(torch_conv(case), leaves)))
    return {op: to_numpy64(results[op]) for op in ops}


def lax_reference(case: ConvCase, operands: Operands, ops: Sequence[str]) -> dict[str, np.ndarray]:
    """jax.lax.conv_general_dilated + jax.vjp in float64 on the CPU (needs `float64_enabled`)."""
    forward_and_grads = jax_forward_and_grads(lax_conv(case, PRECISIONS["fp64"]))
    # Jitted around the selection, so XLA drops the operations not asked for.
    selected = jax.jit(lambda *args: {op: r for op, r in zip(OPS, forward_and_grads(*args)) if op in ops})
    on_cpu = jax_operands(operands.map(lambda t: t.double()), jax.devices("cpu")[0])
    return {op: to_numpy64(r) for op, r in selected(on_cpu.x, on_cpu.w, on_cpu.b, on_cpu.dy).items()}


def reference_results(case: ConvCase, operands: Operands, cross_check: bool) -> tuple[dict[str, tuple], Error | None]:
    """{op: (index into the full result, float64 reference)}, and when cross_check the worst disagreement
    between the torch and the lax references."""
    references, disagreement = {}, None
    for index_by_op, sub_case, sub_operands in reference_parts(case, operands):
        from_torch = torch_reference(sub_case, sub_operands, tuple(index_by_op))
        from_lax = lax_reference(sub_case, sub_operands, tuple(index_by_op)) if cross_check else {}
        for op, index in index_by_op.items():
            references[op] = (index, from_torch[op])
            if cross_check:
                gap = error(from_lax[op], from_torch[op])
                disagreement = gap if disagreement is None else disagreement.worst(gap)
    return references, disagreement


# ---- the check command


def front_results(case: ConvCase, precision: Precision, operands: Operands, device: Device) -> tuple[dict, dict]:
    """{op: result} from the torch front and from the jitted JAX front, on the device under test."""
    on_torch = torch_operands(operands, device.torch_device)
    torch_results = torch_forward_and_grads(ours_torch(case, precision), on_torch)
    on_jax = jax_operands(operands, device.jax_device)
    jax_results = jax_forward_and_grads(ours_jax(case, precision))(on_jax.x, on_jax.w, on_jax.b, on_jax.dy)
    return dict(zip(OPS, torch_results)), dict(zip(OPS, jax_results))


def check_precision(
    case: ConvCase, precision: Precision, operands: Operands, references: dict, device: Device
) -> list[dict]:
    bound = ERROR_BOUNDS[precision.name]
    from_torch, from_jax = front_results(case, precision, operands, device)
    records = []
    for op in (op for op in OPS if op in references):
        index, reference = references[op]
        torch_out, jax_out = to_numpy64(from_torch[op]), to_numpy64(from_jax[op])
        torch_error, jax_error = error(torch_out[index], reference), error(jax_out[index], reference)
        identical = bitwise_equal(torch_out, jax_out)
        records.append(
            dict(
                config=case.name,
                shape=case.describe(),
                precision=precision.name,
                op=op,
                bound=bound,
                error=dataclasses.asdict(torch_error.worst(jax_error)),
                torch_front=dataclasses.asdict(torch_error),
                jax_front=dataclasses.asdict(jax_error),
                bitwise_equal=identical,
                passed=torch_error.within(bound) and jax_error.within(bound) and identical,
            )
        )
    return records


def check_case(
    case: ConvCase, precisions: Sequence[Precision], device: Device, seed: int, progress: Progress
) -> list[dict]:
    """Records for every precision of one case; one float64 reference per input dtype (fp32 and tf32 share one)."""
    records = []
    by_dtype: dict[torch.dtype, list[Precision]] = {}
    for precision in precisions:
        by_dtype.setdefault(precision.torch_dtype, []).append(precision)
    for group_number, (dtype, group) in enumerate(by_dtype.items()):
        # Generated on the CPU, where the float64 reference needs them; the fronts get exact copies.
        operands = random_operands(case, dtype, torch.device("cpu"), case_seed(seed, case.name, str(dtype)))
        # The cross-check validates the reference's formulation of this configuration, which does not depend on
        # the operands' dtype: once per case keeps the CPU work down on big suite problems.
        references, disagreement = reference_results(case, operands, cross_check=group_number == 0)
        if disagreement is not None:
            records.append(
                dict(
                    config=case.name,
                    shape=case.describe(),
                    precision="ref64",
                    op="torch vs lax",
                    bound=ERROR_BOUNDS["fp64"],
                    error=dataclasses.asdict(disagreement),
                    torch_front=None,
                    jax_front=None,
                    bitwise_equal=None,
                    passed=disagreement.within(ERROR_BOUNDS["fp64"]),
                )
            )
        for precision in group:
            records.extend(check_precision(case, precision, operands, references, device))
            progress.update(f"{case.name} {precision.name}")
    return records


def _check_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        worst = Error(**r["error"])
        identical = "-" if r["bitwise_equal"] is None else ("yes" if r["bitwise_equal"] else "NO")
        rows.append(
            [
                r["config"],
                r["precision"],
                r["op"],
                f"{worst.relative:.2e}",
                f"{worst.max_relative:.2e}",
                f"{r['bound']:.0e}",
                "pass" if r["passed"] else "FAIL",
                identical,
            ]
        )
    headers = ["config", "prec", "op", "rel err", "max err", "bound", "result", "jax==torch"]
    return format_table(headers, rows, left_columns=3)


def run_check(
    configs: Sequence[str] | None, suite: bool, precisions: Sequence[str] | None, json_path: str | None, seed: int
) -> int:
    """Checks every case x precision; prints the table (and writes JSON). Returns 1 if anything failed."""
    started = time.perf_counter()
    with float64_enabled():
        device = detect_device()
        # The suite by default on a GPU; on CPU, where the suite is scaled down, the coverage set spans more.
        cases, source = select_cases(configs, suite or (device.is_gpu and not configs), device)
        # Batch 2 exercises the batch stride; more would only multiply the float64 reference's CPU time.
        cases = [case.with_batch(min(case.batch, CHECK_MAX_BATCH)) for case in cases or COVERAGE_CASES]
        chosen = [PRECISIONS[n] for n in precisions or (GPU_PRECISIONS if device.is_gpu else CPU_CHECK_PRECISIONS)]
        say(run_header("check", device))
        for case in cases:
            say(f"  {case.name:<18} {case.describe()}")
        records = []
        with Progress(len(cases) * len(chosen), "check") as progress:
            for case in cases:
                records.extend(check_case(case, chosen, device, seed, progress))
    print(_check_table(records))
    say(
        "rel err = ||out - ref|| / ||ref||, max err = max|out - ref| / max|ref| (bound x "
        f"{MAX_ERROR_FACTOR}), worst of the two fronts; ref = float64 F.conv3d on the CPU"
    )
    failures = [r for r in records if not r["passed"]]
    elapsed = time.perf_counter() - started
    if failures:
        print(f"FAILED: {len(failures)} of {len(records)} checks ({elapsed:.1f} s)")
    else:
        print(f"all {len(records)} checks passed ({elapsed:.1f} s)")
    if json_path:
        write_json(
            json_path,
            dict(command="check", environment=environment_info(device), suite=source, seed=seed, results=records),
        )
    return 1 if failures else 0
