"""Small first-layer and depthwise problems through the torch front on a Hopper GPU, for compute-sanitizer (run by
`scripts/gpu_session.sh sanitizer_first_layer`): hopper_smallc's forward, grad-input and grad-weight and the folded
grad-input (the strided case), and the 3x3x3 depthwise kernels (sm80 stencil_3x3x3_stream, stencil_3x3x3_regs,
wgrad_depthwise_3x3x3_regs: bricks and D chunks cut at every edge, a channel multiplier, grad-weight splits; the
tensor-core stencil_3x3x3_mma on rows a multiple of 4 in 16-bit, its window shift 3 and 2), every dtype and math mode, both layouts, tiles
crossing batch boundaries and the end of the positions, bias."""

import torch

import jaxconv3d.torch as jt

for dt, prec in [(torch.float32, None), (torch.float32, "tf32"), (torch.bfloat16, None), (torch.float16, None)]:
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        for xs, ws, kw in [((2, 3, 10, 11, 12), (64, 3, 3, 3, 3), dict(padding=1)),
                           ((3, 1, 7, 9, 20), (16, 1, 3, 3, 3), dict(stride=(1, 1, 2))),
                           ((1, 3, 6, 7, 5), (100, 3, 3, 3, 3), dict(padding=(1, 0, 2))),
                           ((2, 3, 7, 21, 37), (64, 3, 3, 3, 3), dict(padding=1)),
                           ((2, 3, 9, 17, 33), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
                           ((9, 2, 5, 7, 9), (4, 1, 3, 3, 3), dict(padding=((0, 2), (3, 1), (2, 2)), groups=2)),
                           ((1, 2, 35, 18, 5), (2, 1, 3, 3, 3), dict(padding=((2, 0), (1, 1), (1, 1)), groups=2)),
                           ((2, 3, 9, 20, 36), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
                           ((1, 2, 6, 10, 32), (2, 1, 3, 3, 3), dict(padding=((1, 1), (2, 1), (2, 0)), groups=2))]:
            x = torch.randn(xs, device="cuda", dtype=dt).contiguous(memory_format=fmt).requires_grad_(True)
            w = torch.randn(ws, device="cuda", dtype=dt).contiguous(memory_format=fmt).requires_grad_(True)
            b = torch.randn(ws[0], device="cuda", dtype=dt).requires_grad_(True)
            y = jt.conv3d(x, w, b, precision=prec, **kw)
            torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
torch.cuda.synchronize()
print("san ok")
