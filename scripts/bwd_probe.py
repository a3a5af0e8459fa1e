"""The suite's depthwise layer (NCDHW) through the DLPack adapter's doors, each timed with CUDA events (median of 15
loops of 20 back-to-back calls, per call): forward, grad-input alone, grad-weight alone, and the backward door
(`bwd`: one fused kernel where the dispatcher has one, else grad-input then grad-weight). Also a short program to
profile (`ncu ... scripts/py scripts/bwd_probe.py fp32`). argv: bf16 | fp16 | fp32."""
import sys

import torch
from torch.utils.dlpack import to_dlpack

from jaxconv3d import _ext, _plan, card_rates, conv_config, workloads

prec = sys.argv[1]
case = {c.name: c for c in workloads.load_suite()[0]}["depthwise"]
dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
cfg = conv_config(case.x_shape, case.w_shape, None, **case.conv_kwargs)
g = torch.Generator(device="cuda").manual_seed(0)
mk = lambda s: torch.randn(s, generator=g, device="cuda", dtype=dt)  # noqa: E731
x, w, dy = mk(cfg.x_shape), mk(cfg.w_shape) * 0.2, mk(cfg.y_shape)
y, dx, dw = torch.empty_like(dy), torch.empty_like(x), torch.empty_like(w)
cc = _plan.cc_of(torch.device("cuda"))
plans = {op: _plan.plan(cfg, dt, cc, op, 0) for op in ("forward", "grad_input", "grad_weight", "grads")}
ws = torch.empty(max(1, plans["grad_weight"]["workspace_bytes"]), dtype=torch.uint8, device="cuda")
stream = torch.cuda.current_stream().cuda_stream
attrs = (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, 0, 0, stream)
a = _ext.torch_adapter
cx, cw, cdy, cy, cdx, cdw, cws = (to_dlpack(t) for t in (x, w, dy, y, dx, dw, ws))
doors = {
    "forward": lambda: a.fwd(cx, cw, None, cy, None, *attrs),
    "grad_input": lambda: a.dgrad(cdy, cw, cdx, None, *attrs),
    "grad_weight": lambda: a.wgrad(cx, cdy, cdw, cws, *attrs),
    "bwd": lambda: a.bwd(cdy, cw, cdx, cx, cdy, cdw, None, None, cws, *attrs[:6], 0, 0, stream),
}
for op in ("forward", "grad_input", "grad_weight", "grads"):
    print(f"{op:12s} {plans[op]['family']}:{plans[op]['tile']}")
for name, fn in doors.items():
    ms = card_rates.event_median_ms(lambda: [fn() for _ in range(20)], reps=15, warmup=2) / 20
    print(f"{prec} {name:12s} {1000 * ms:8.1f} us a call")
torch.cuda.synchronize()
