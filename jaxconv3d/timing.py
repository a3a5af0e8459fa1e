"""The one timer of `jaxconv3d bench`: every implementation (ours through torch or JAX, torch/cuDNN, XLA) is timed
by the same code, with the same clock and the same synchronisation.

A loop is `k` back-to-back calls between two full synchronisations, read on the host clock:

    synchronise; t0 = perf_counter(); result = fn(ops) x k; synchronise(result); t1 = perf_counter()

and a sample is one untimed call and then two such loops in a row, of k and 2k calls, Python's garbage collector
paused: time per call = (T(2k) - T(k)) / k. A loop's time is a fixed cost F (the first call's host latency, with the
GPU idle until its first kernel arrives, and the final synchronisation: 0.3-1 ms between the bench's interleaved
calls, docs/perf.md v15) plus k calls of steady state; the difference cancels F, leaving what a call costs in a
training loop, dispatch included where the host is the slower side. (Up to v16 a sample was T(k) / k with the
k-loop >= 5 ms: F / k stayed in, the same milliseconds for everyone, about 10 % of a 1 ms call and 1 % of a 6 ms
one, which pulled every ratio towards 1.) The plain loop estimate T(2k) / 2k is kept beside each sample
(`loop_ms`) for comparison with earlier runs.

"Synchronise" waits for everything queued so far, whichever framework queued it: first `jax.block_until_ready` on
the JAX arrays of the result (JAX dispatches asynchronously, on its own threads and stream), then
`torch.cuda.synchronize()`, a device-wide wait that also covers XLA's streams (torch and XLA share the device's
primary context). The host clock after a full synchronisation sees JAX and torch work alike; no stream's events
can miss another stream's kernels. `k` is one count for every implementation of a pass: `calls_per_loop` finds
each one's (1, 2, 5, 10, 20, ... until one loop lasts at least `min_loop_ms`) and the bench gives all of them the
largest (`bench.share_calls`), so every implementation's sample spans the same number of calls. Operands rotate
among several input sets from call to call (`input_set_count`, sized from the card's L2 cache) so that no call
finds its inputs left in L2 by the previous one.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Any, Callable, Sequence

import jax
import torch

from .workloads import ConvCase, Precision

DEFAULT_L2_BYTES = 50 * 2**20  # H100's L2: used on the CPU and when the card does not say
MAX_INPUT_SETS = 16
# The k-loop lasts at least 2.5 ms and the 2k-loop 5 ms: long enough that the host's jitter in the fixed cost they
# share (0.3-1 ms, docs/perf.md v15) moves a sample by a few percent at most.
MIN_LOOP_MS = 2.5
MAX_LOOP_CALLS = 1000
PAIR_TRIES = 3  # LoopTimer.sample: measurements of a sample whose 2k-loop must outlast its k-loop
DESCRIPTION = (
    "host clock (time.perf_counter) around loops of back-to-back calls between two full synchronisations "
    "(jax.block_until_ready on the loop's last result, then torch.cuda.synchronize on a GPU); a sample is one untimed "
    "call, a loop of k calls and then one of 2k (garbage collector paused), time per call = (T(2k) - T(k)) / k (the "
    "loops' fixed cost, first-call latency and synchronisation, cancels; loop_ms = T(2k) / 2k is kept beside it; a "
    "2k-loop no longer than its k-loop is measured again, at most {tries} times, then the sample is loop_ms); k: 1, "
    "2, 5, 10, ... until the fastest implementation's k-loop lasts >= {min_loop_ms} ms, the same k for every "
    "implementation of a pass; the same timer for every implementation"
)


def l2_cache_bytes(torch_device: torch.device) -> int:
    """The card's L2 size (torch's device properties); DEFAULT_L2_BYTES on the CPU or when unknown."""
    if torch_device.type != "cuda":
        return DEFAULT_L2_BYTES
    size = getattr(torch.cuda.get_device_properties(torch_device), "L2_cache_size", 0)
    return int(size) if size and size > 0 else DEFAULT_L2_BYTES


def input_set_count(case: ConvCase, precision: Precision, l2_bytes: int) -> int:
    """How many operand sets to rotate through, so that no call finds its inputs left warm in L2 by the previous
    call: one when x and w alone exceed L2, else at least two, and enough that a cycle's x, w, dy exceed 2 x L2."""
    itemsize = torch.empty((), dtype=precision.torch_dtype).element_size()
    p = case.problem
    forward_inputs = itemsize * (math.prod(p.x_shape) + math.prod(p.w_shape))
    if forward_inputs >= l2_bytes:
        return 1
    per_set = forward_inputs + itemsize * math.prod(p.y_shape)  # + dy, read by the backward pass
    return min(MAX_INPUT_SETS, max(2, math.ceil(2 * l2_bytes / per_set)))


@dataclasses.dataclass(frozen=True)
class Sample:
    """One timed sample (`LoopTimer.sample`)."""

    ms: float  # per call: (T(2k) - T(k)) / k, the loops' fixed cost cancelled
    loop_ms: float  # T(2k) / 2k: the loop estimate of v16 and before, fixed cost spread over 2k calls
    result: Any  # the last call's
    calls: int  # calls made (3k + 1 a try): where the rotation of input sets goes on
    fallback: bool = False  # every try's 2k-loop was no longer than its k-loop: ms is the loop estimate


@dataclasses.dataclass
class LoopTimer:
    """Times `fn(input_sets[i])` calls as described in the module docstring; one instance serves every
    implementation of a run. `clock` is replaceable for tests."""

    torch_device: torch.device
    min_loop_ms: float = MIN_LOOP_MS
    max_calls: int = MAX_LOOP_CALLS
    clock: Callable[[], float] = time.perf_counter

    @property
    def description(self) -> str:
        return DESCRIPTION.format(min_loop_ms=self.min_loop_ms, tries=PAIR_TRIES)

    def synchronize(self, result: Any = None) -> None:
        """Returns once all work queued so far has finished: JAX's (asynchronous dispatch) and the device's."""
        jax.block_until_ready(result)  # a no-op on torch tensors and None
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def loop(self, fn: Callable, input_sets: Sequence[Any], calls: int, first: int = 0) -> tuple[float, Any]:
        """(milliseconds per call, the last call's result) for `calls` calls on input sets first, first + 1, ..."""
        self.synchronize()
        start = self.clock()
        result = None
        for i in range(calls):
            result = fn(input_sets[(first + i) % len(input_sets)])
        self.synchronize(result)
        return (self.clock() - start) * 1e3 / calls, result

    def sample(self, fn: Callable, input_sets: Sequence[Any], calls: int, first: int = 0) -> "Sample":
        """One untimed call, then a loop of `calls` calls and one of 2 x `calls`, on input sets first, first + 1, ...
        (3 x `calls` + 1 in all), Python's garbage collector paused: the steady-state time per call,
        (T(2k) - T(k)) / k, and the plain loop estimate T(2k) / 2k. The untimed call puts both loops behind a call
        of the same implementation: without it the k-loop alone came right after another implementation's calls,
        paid a larger first-call latency than the 2k-loop, and the difference fell below the GPU's own time
        (v17: kb54 bf16 ours:torch:cl forward+backward 0.919 ms against 0.994 ms of kernels).

        A 2k-loop no longer than its k-loop says the host's noise outweighed k calls (a loaded CPU machine): the
        triple is measured again, at most `PAIR_TRIES` times in all, and then the sample is the loop estimate
        (`Sample.fallback`), which errs high, never low."""
        enabled = gc.isenabled()
        gc.disable()
        made = 0
        try:
            for _ in range(PAIR_TRIES):
                self.synchronize(fn(input_sets[(first + made) % len(input_sets)]))
                short_ms, _ = self.loop(fn, input_sets, calls, first + made + 1)
                long_ms, result = self.loop(fn, input_sets, 2 * calls, first + made + 1 + calls)
                made += 3 * calls + 1
                if long_ms * 2 > short_ms:  # T(2k) > T(k)
                    return Sample(2 * long_ms - short_ms, long_ms, result, made)
        finally:
            if enabled:
                gc.enable()
        return Sample(long_ms, long_ms, result, made, fallback=True)

    def calls_per_loop(self, fn: Callable, input_sets: Sequence[Any]) -> int:
        """The first of 1, 2, 5, 10, 20, 50, ... (at most max_calls) whose loop lasts at least min_loop_ms."""
        for calls in _one_two_five(self.max_calls):
            ms_per_call, _ = self.loop(fn, input_sets, calls)
            if ms_per_call * calls >= self.min_loop_ms:
                return calls
        return self.max_calls


def _one_two_five(limit: int):
    decade = 1
    while True:
        for step in (1, 2, 5):
            if step * decade >= limit:
                yield limit
                return
            yield step * decade
        decade *= 10
