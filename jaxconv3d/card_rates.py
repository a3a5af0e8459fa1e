"""The floors of a bench run measured on its own card: the device-to-device copy rate and the dense GEMM rate of
each precision, timed with CUDA events in the same process as the rows they judge, and a case's floor from them.

suite.json's floors are an H100's (3.0 TB/s copy; fp32 51, tf32 395, bf16 746 TFLOP/s). On another card (an H200
copies ~4.1 TB/s) a memory-bound kernel's distance from its floor has to be taken against that card's rates, so
the bench measures them and reports both: floor = max(bytes moved at least once / copy rate, FLOPs / GEMM rate),
the forward+backward floor three times the forward's, as suite.json defines them.
"""

from __future__ import annotations

import math
import statistics

import torch

from .workloads import ConvCase, Precision

COPY_BYTES = 1 << 30  # one buffer of the copy (read once, written once)
GEMM_SIZE = 8192      # square matmul: 2 n^3 FLOPs
REPS = 7


def event_median_ms(fn, reps: int, warmup: int = 2) -> float:
    """Median CUDA-event time (ms) of fn() on the current stream, after `warmup` untimed calls."""
    for _ in range(warmup):
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


def measure(device: torch.device, precisions: list[Precision]) -> dict:
    """{"copy_tb_s": ..., "gemm_tflop_s": {precision name: ...}} on `device` (a CUDA device)."""
    nbytes = min(COPY_BYTES, torch.cuda.mem_get_info(device)[0] // 8)  # a small card copies less
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = event_median_ms(lambda: dst.copy_(src), REPS)
    del src, dst
    gemm = {}
    allow = torch.backends.cuda.matmul.allow_tf32
    try:
        for p in precisions:
            torch.backends.cuda.matmul.allow_tf32 = p.tf32
            try:
                a = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).to(p.torch_dtype)
                b = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).to(p.torch_dtype)
                ms = event_median_ms(lambda: torch.mm(a, b), REPS)
            except RuntimeError:  # a dtype this card's GEMM lacks, or no memory: no floor for that precision
                continue
            finally:
                a = b = None
            gemm[p.name] = 2 * GEMM_SIZE**3 / (ms * 1e-3) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return dict(copy_tb_s=2 * nbytes / (copy_ms * 1e-3) / 1e12, gemm_tflop_s=gemm,
                method=f"copy of {nbytes >> 20} MiB (read + write), {GEMM_SIZE}^3 torch.mm; CUDA events, "
                       f"median of {REPS}")


def floor_ms(case: ConvCase, precision: Precision, pass_name: str, rates: dict | None) -> float | None:
    """The case's floor on the measured card: max(bytes / copy rate, FLOPs / GEMM rate); x3 for fwd_bwd."""
    if not rates or precision.name not in rates["gemm_tflop_s"]:
        return None
    p = case.problem
    size = torch.empty((), dtype=precision.torch_dtype).element_size()
    elements = math.prod(p.x_shape) + math.prod(p.w_shape) + math.prod(p.y_shape) + (p.out_channels if case.bias else 0)
    fwd = max(elements * size / (rates["copy_tb_s"] * 1e12), p.flops() / (rates["gemm_tflop_s"][precision.name] * 1e12))
    return fwd * 1e3 * (3 if pass_name == "fwd_bwd" else 1)
