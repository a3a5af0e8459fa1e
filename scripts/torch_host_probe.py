"""Host cost of the torch front's Python, without any kernel: the adapter is replaced by a stub that returns at
once, so what is timed is Python and torch's autograd machinery (issue 9, item 12). Prints microseconds per call
(median of 7 blocks) for a forward+backward step through jaxconv3d.torch.conv3d, the same step through an
autograd.Function of the front's own base class that does nothing (the floor a Python Function pays), and the
front's pieces timed alone.

    scripts/py scripts/torch_host_probe.py
"""
from __future__ import annotations

import torch

import jaxconv3d.torch as jt
from jaxconv3d.overhead import per_call_us
from jaxconv3d.torch import _ops


class _Stub:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _Nothing(_ops._Operation):
    """The same Function machinery as the front's ConvFunction (setup_context, the fast apply), doing nothing."""

    @staticmethod
    def forward(x, w, b):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, g):
        return torch.empty_like(g), torch.empty(ctx.w_shape), torch.empty(ctx.b_shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.w_shape, ctx.b_shape = inputs[1].shape, inputs[2].shape


def main() -> None:
    x = torch.randn(1, 4, 8, 8, 8, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    dy = torch.randn(1, 4, 8, 8, 8)
    jt.conv3d(x, w, b, padding=1)  # validated and planned once, with the real adapter
    cfg = jt._VALIDATED[jt._repeat_key(x, w, b, (1, 1, 1, 1, None))][0]
    _ops._adapter = _Stub()

    def forward_no_grad():
        with torch.no_grad():
            return jt.conv3d(x, w, b, padding=1)

    rows = {
        "step through jaxconv3d.torch.conv3d (x, w, b)": lambda: torch.autograd.grad(
            jt.conv3d(x, w, b, padding=1), (x, w, b), dy),
        "step through an autograd.Function doing nothing (the front's base class)": lambda: torch.autograd.grad(
            _Nothing.apply(x, w, b), (x, w, b), dy),
        "conv3d forward, no grad": forward_no_grad,
        "conv3d forward, building the graph": lambda: jt.conv3d(x, w, b, padding=1),
        "_ops.fwd alone": lambda: _ops.fwd(x, w, b, cfg),
        "_ops.conv_grads alone (dx, dw, db)": lambda: _ops.conv_grads(dy, x, w, cfg, True, True, True),
    }
    for name, f in rows.items():
        print(f"{name}: {per_call_us(f, 'cpu', 3000, blocks=7):.1f} us")


if __name__ == "__main__":
    main()
