"""The channel-axis moves the torch front makes around a kernel family that reads NDHWC, timed on the suite's shapes:
our layout kernel (`cuda/layout_convert.cu`, through `_ops._moved_channels`), torch's strided copy, and XLA's
transpose (`jnp.moveaxis` under jit), each a median per call of its kernels' GPU time (CUPTI, through
torch.profiler: XLA's kernels show too), against the bytes it moves (read + write) at the card's copy rate measured
in the same process.

    scripts/py scripts/layout_probe.py [LABEL]

Forward's moves: x NCDHW -> NDHWC ("in") and y back ("out"). LABEL tags our column (to compare builds).
"""

import statistics
import sys

import jax
import jax.numpy as jnp
import torch
from torch.profiler import ProfilerActivity, profile

from jaxconv3d import card_rates
from jaxconv3d.torch import _ops

CALLS = 20
SHAPES = {  # (config, tensor): logical NCDHW shape
    ("pointwise", "x in"): (8, 128, 16, 28, 28),
    ("pointwise", "y out"): (8, 256, 16, 28, 28),
    ("down_s2", "x in"): (4, 32, 64, 64, 64),
    ("down_s2", "y out"): (4, 64, 32, 32, 32),
    ("unet_64", "x in"): (2, 64, 64, 64, 64),
    ("video_c3d", "y out"): (4, 128, 16, 56, 56),
    ("kb54", "x in"): (16, 3, 64, 64, 64),
    ("kb54", "y out"): (16, 64, 64, 64, 64),
    ("kb54", "dx out"): (16, 3, 64, 64, 64),  # a grad-input of three channels back to NCDHW
}


def kernel_us(fn) -> float:
    """Median over CALLS calls of the summed GPU time of fn's kernels (us)."""
    for _ in range(3):
        r = fn()
    jax.block_until_ready(r)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            r = fn()
        jax.block_until_ready(r)
        torch.cuda.synchronize()
    ev = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                if e.device_type == torch.autograd.DeviceType.CUDA)
    per = max(1, len(ev) // CALLS)
    calls = [sum(e - s for s, e in ev[i:i + per]) for i in range(0, per * CALLS, per)]
    return statistics.median(calls)


def main(label: str) -> None:
    rate = card_rates.measure(torch.device("cuda"), [])["copy_tb_s"]
    print(f"copy rate {rate:.2f} TB/s; us per call (x floor = time / (bytes read + written / copy rate))")
    print(f"{'config':10s} {'tensor':6s} {'dtype':9s} {'MB':>7s} {'floor':>7s} {'ours:' + label:>14s} "
          f"{'torch':>14s} {'xla':>14s}")
    to_cl = jax.jit(lambda a: jnp.moveaxis(a, 1, -1))
    from_cl = jax.jit(lambda a: jnp.moveaxis(a, -1, 1))
    for dtype in (torch.bfloat16, torch.float32):
        for (config, tensor), shape in SHAPES.items():
            inward = tensor.endswith("in")
            x = torch.randn(shape, device="cuda", dtype=dtype)
            src = x if inward else x.contiguous(memory_format=torch.channels_last_3d)
            mb = src.numel() * src.element_size() / 1e6
            floor = 2 * mb / rate  # us: MB / (TB/s) = us
            ours = kernel_us(lambda: _ops._moved_channels(src, inward))
            theirs = kernel_us(lambda: src.contiguous(memory_format=torch.channels_last_3d if inward else
                                                      torch.contiguous_format))
            a = jnp.asarray(jax.dlpack.from_dlpack(x)) if inward else jnp.moveaxis(jax.dlpack.from_dlpack(x), 1, -1)
            a = a + 0  # its own buffer
            xla = kernel_us(lambda: (to_cl if inward else from_cl)(a))
            cells = " ".join(f"{t:7.1f} {t / floor:5.2f}x" for t in (ours, theirs, xla))
            print(f"{config:10s} {tensor:6s} {str(dtype)[6:]:9s} {mb:7.1f} {floor:7.1f} {cells}")
            del x, src, a


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
