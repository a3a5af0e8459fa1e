"""Bridge overhead on a tiny input: what the torch front costs per call on top of a direct kernel launch.

`python -m jaxconv3d.overhead` prints microseconds per call (mean over many back-to-back calls, device synchronised
once at the end, so it measures the host-side launch path, which is what bounds a tiny convolution).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.dlpack import to_dlpack  # noqa: E402


def per_call_us(fn, device: str, calls: int = 2000) -> float:
    for _ in range(50):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
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

    rows = []
    with torch.no_grad():
        rows.append(("adapter call, capsules made once (direct launch)", per_call_us(lambda: adapter.fwd(*caps, *attrs), device)))
        rows.append(("jaxconv3d.torch.conv3d", per_call_us(lambda: jt.conv3d(x, w, None, padding=1), device)))
        rows.append(("jaxconv3d.torch.Conv3d module", per_call_us(lambda: module(x), device)))
        rows.append(("torch F.conv3d (cuDNN on GPU)", per_call_us(lambda: F.conv3d(x, w, None, padding=1), device)))
        rows.append(("torch nn.Conv3d module", per_call_us(lambda: torch_module(x), device)))
    rows.append(("jax.jit(jaxconv3d.conv3d) dispatch", per_call_us(lambda: jitted(jx, jw), device, calls=500)))
    rows.append(("jax.jit(lax.conv_general_dilated) dispatch", per_call_us(lambda: lax_jitted(jx, jw), device,
                                                                          calls=500)))
    jax.block_until_ready((jitted(jx, jw), lax_jitted(jx, jw)))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"bridge overhead on {name}, input (1, 4, 8, 8, 8), weight (4, 4, 3, 3, 3), us per call:")
    for label, us in rows:
        print(f"  {label:<52} {us:8.1f}")


if __name__ == "__main__":
    main()
