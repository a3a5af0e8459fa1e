"""The one timer of `jaxconv3d bench`: every implementation (ours through torch or JAX, torch/cuDNN, XLA) is timed
by the same code, with the same clock and the same synchronisation.

A measurement is a loop of `calls` back-to-back calls between two full synchronisations, read on the host clock:

    synchronise; t0 = perf_counter(); result = fn(ops) x calls; synchronise(result); t1 = perf_counter()
    time per call = (t1 - t0) / calls

"Synchronise" waits for everything queued so far, whichever framework queued it: first `jax.block_until_ready` on
the JAX arrays of the result (JAX dispatches asynchronously, on its own threads and stream), then
`torch.cuda.synchronize()`, a device-wide wait that also covers XLA's streams (torch and XLA share the device's
primary context). The host clock after a full synchronisation sees JAX and torch work alike; no stream's events
can miss another stream's kernels. `calls` is one count for every implementation of a pass: `calls_per_loop` finds
each one's (1, 2, 5, 10, 20, ... until one loop lasts at least `min_loop_ms`) and the bench gives all of them the
largest (`bench.share_calls`), so the synchronisation and the first call's host latency are amortised over the same
number of calls for everyone. Operands rotate among several input sets from call to call
(`input_set_count`, sized from the card's L2 cache) so that no call finds its inputs left in L2 by the previous one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import jax
import torch

from .workloads import ConvCase, Precision

DEFAULT_L2_BYTES = 50 * 2**20  # H100's L2: used on the CPU and when the card does not say
MAX_INPUT_SETS = 16
# A loop of at least 5 ms: the synchronisation before it and its first call's host latency (0.3-0.5 ms on an H100
# host between the bench's interleaved calls, ours and cuDNN's alike: docs/perf.md v15) weigh at most ~10 %.
MIN_LOOP_MS = 5.0
MAX_LOOP_CALLS = 1000
DESCRIPTION = (
    "host clock (time.perf_counter) around a loop of back-to-back calls between two full synchronisations "
    "(jax.block_until_ready on the loop's last result, then torch.cuda.synchronize on a GPU); time per call = "
    "loop time / calls; calls per loop: 1, 2, 5, 10, ... until the fastest implementation's loop lasts >= "
    "{min_loop_ms} ms, the same count for every implementation of a pass; the same timer for every implementation"
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
        return DESCRIPTION.format(min_loop_ms=self.min_loop_ms)

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
