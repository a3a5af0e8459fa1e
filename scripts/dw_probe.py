"""The suite's depthwise layer through the torch front, forward x2 then forward+backward x2: a short program to profile
(`ncu ... python3 scripts/dw_probe.py bf16`). argv: bf16 | fp16 | fp32 [cl] (cl: channels_last_3d tensors)."""
import sys
import torch
import jaxconv3d.torch as jt
from jaxconv3d import workloads
prec = sys.argv[1]
fmt = torch.channels_last_3d if len(sys.argv) > 2 and sys.argv[2] == "cl" else torch.contiguous_format
case = {c.name: c for c in workloads.load_suite()[0]}["depthwise"]
dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
g = torch.Generator(device="cuda").manual_seed(0)
mk = lambda s: torch.randn(s, generator=g, device="cuda", dtype=dt).contiguous(memory_format=fmt)
x, w = mk(case.x_shape), mk(case.w_shape) * 0.2
conv = lambda x, w: jt.conv3d(x, w, **case.conv_kwargs)
for _ in range(2):
    with torch.no_grad(): y = conv(x, w)
dy = mk(y.shape)
xl, wl = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
for _ in range(2): torch.autograd.grad(conv(xl, wl), (xl, wl), dy)
torch.cuda.synchronize()
