"""Bridge overhead on a tiny input: what the torch front costs per call on top of a direct kernel launch.

`python -m jaxconv3d.overhead` prints microseconds per call (the median of five blocks' means over many back-to-back
calls, the device synchronised at each block's end, so it measures the host-side launch path, which is what bounds a
tiny convolution): forwards with no autograd graph, then training steps (forward, then `torch.autograd.grad` of every
operand), each next to torch's own F.conv3d / nn.Conv3d, and the JAX call next to `jax.jit(lax.conv_general_dilated)`.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.dlpack import to_dlpack  # noqa: E402


def per_call_us(fn, device: str, calls: int = 2000, blocks: int = 5) -> float:
    """Median over `blocks` blocks of the mean time of `calls` back-to-back calls (the device synchronised at each
    block's end), after a warm-up."""
    for _ in range(50):
        fn()
    means = []
    for _ in range(blocks):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def rows(calls: int = 1000) -> list[tuple[str, float]]:
    """(label, microseconds per call) for every row of the probe, on the GPU if there is one."""
    import jax

    import jaxconv3d
    import jaxconv3d.torch as jt
    from jaxconv3d import _ext, conv_config
    from jaxconv3d.torch import _ops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, 4, 8, 8, 8, device=device)
    module = jt.Conv3d(4, 4, 3, padding=1, bias=False).to(device)
    w = module.weight.detach()
    cfg = conv_config(x.shape, w.shape, None, padding=1)
    y = torch.empty(cfg.y_shape, device=device)
    stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else 0
    caps = (to_dlpack(x), to_dlpack(w), None, to_dlpack(y), None)  # this tiny problem's family needs no workspace
    attrs = (*_ops._attrs(cfg), 0, stream)
    adapter = _ext.torch_adapter

    jx, jw = jax.device_put(x.cpu().numpy()), jax.device_put(w.cpu().numpy())
    jitted = jax.jit(lambda a, b: jaxconv3d.conv3d(a, b, padding=1))
    lax_jitted = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, (1, 1, 1), [(1, 1)] * 3, dimension_numbers=("NCDHW", "OIDHW", "NCDHW")))
    torch_module = torch.nn.Conv3d(4, 4, 3, padding=1, bias=False).to(device)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    bg = torch.randn(4, device=device, requires_grad=True)
    dy = torch.randn(cfg.y_shape, device=device)

    def step(conv, *operands):
        return lambda: torch.autograd.grad(conv(*operands), operands, dy)

    out = []
    with torch.no_grad():
        out.append(("adapter call, capsules made once (direct launch)", per_call_us(lambda: adapter.fwd(*caps, *attrs),
                                                                                    device, calls)))
        out.append(("jaxconv3d.torch.conv3d", per_call_us(lambda: jt.conv3d(x, w, None, padding=1), device, calls)))
        out.append(("torch F.conv3d (cuDNN on GPU)", per_call_us(lambda: F.conv3d(x, w, None, padding=1), device, calls)))
        out.append(("jaxconv3d.torch.Conv3d module", per_call_us(lambda: module(x), device, calls)))
        out.append(("torch nn.Conv3d module", per_call_us(lambda: torch_module(x), device, calls)))
    steps = calls // 4
    out.append(("step: jaxconv3d.torch.conv3d, grads of x, w, b",
                per_call_us(step(lambda a, b, c: jt.conv3d(a, b, c, padding=1), xg, wg, bg), device, steps)))
    out.append(("step: torch F.conv3d, grads of x, w, b",
                per_call_us(step(lambda a, b, c: F.conv3d(a, b, c, padding=1), xg, wg, bg), device, steps)))
    out.append(("step: jaxconv3d.torch.Conv3d module, grads of x, weight",
                per_call_us(step(lambda a, b: module(a), xg, module.weight), device, steps)))
    out.append(("step: torch nn.Conv3d module, grads of x, weight",
                per_call_us(step(lambda a, b: torch_module(a), xg, torch_module.weight), device, steps)))
    out.append(("jax.jit(jaxconv3d.conv3d) dispatch", per_call_us(lambda: jitted(jx, jw), device, calls // 4)))
    out.append(("jax.jit(lax.conv_general_dilated) dispatch", per_call_us(lambda: lax_jitted(jx, jw), device,
                                                                          calls // 4)))
    jax.block_until_ready((jitted(jx, jw), lax_jitted(jx, jw)))
    return out


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    measured = rows()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"bridge overhead on {name}, input (1, 4, 8, 8, 8), weight (4, 4, 3, 3, 3), us per call:")
    for label, us in measured:
        print(f"  {label:<56} {us:8.1f}")


if __name__ == "__main__":
    main()
