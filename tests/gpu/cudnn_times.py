"""Per-operation cuDNN times (torch, channels_last_3d and NCDHW) for the suite's dense shapes, to set next to
tests/gpu/hopper_check.cu --bench in the same GPU run. CUDA-event medians of 20 calls after warm-up."""

import torch

CASES = {
    "unet_64": (2, 64, 64, (64, 64, 64), 3, 1, 1),
    "unet_256": (2, 256, 256, (16, 16, 16), 3, 1, 1),
    "video_c3d": (4, 64, 128, (16, 56, 56), 3, 1, 1),
    "down_s2": (4, 32, 64, (64, 64, 64), 3, 2, 1),
    "pointwise": (8, 128, 256, (16, 28, 28), 1, 1, 0),
}


def median_ms(fn, reps=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main():
    torch.backends.cudnn.benchmark = True
    for name, (n, c, o, dhw, k, s, p) in CASES.items():
        for dtype, tf32 in ((torch.bfloat16, False), (torch.float32, True)):
            torch.backends.cudnn.allow_tf32 = tf32
            for fmt in (torch.channels_last_3d, torch.contiguous_format):
                x = torch.randn(n, c, *dhw, device="cuda", dtype=dtype).to(memory_format=fmt)
                w = torch.randn(o, c, k, k, k, device="cuda", dtype=dtype).to(memory_format=fmt)
                y = torch.nn.functional.conv3d(x, w, stride=s, padding=p)
                dy = torch.randn_like(y)
                args = ([s] * 3, [p] * 3, [1] * 3, False, [0] * 3, 1)
                fwd = median_ms(lambda: torch.nn.functional.conv3d(x, w, stride=s, padding=p))
                dgrad = median_ms(lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *args, [True, False, False]))
                wgrad = median_ms(lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *args, [False, True, False]))
                tag = "bf16" if dtype == torch.bfloat16 else "tf32"
                lay = "ndhwc" if fmt == torch.channels_last_3d else "ncdhw"
                print(f"cudnn {name:10s} {tag} {lay}  fwd {fwd:.3f}  dgrad {dgrad:.3f}  wgrad {wgrad:.3f} ms")


if __name__ == "__main__":
    main()
