"""ConvTranspose3d timed the way `jaxconv3d bench` times Conv3d: a UNet decoder's up-convolutions.

    scripts/py scripts/transpose_times.py [--precision fp32,tf32,bf16] [--reps 20] [--json FILE]

Ours through torch (`jaxconv3d.torch.conv_transpose3d`, NCDHW and channels_last_3d tensors) and through JAX
(`jaxconv3d.conv_transpose3d`, NCDHW), next to torch's `F.conv_transpose3d` (cuDNN, both layouts) and XLA
(`lax.conv_general_dilated` with the input dilated by the stride and the filter flipped and transposed: what
`jax.lax.conv_transpose(..., transpose_kernel=True)` lowers to), forward and forward+backward. The bench's own
machinery does the timing (`timing.LoopTimer`, one loop length for every implementation of a pass, interleaved
repetitions, rotating input sets) and checks every timed loop's last result against float32 `F.conv_transpose3d` +
autograd with TF32 off (`bench_check` bounds). Supporting evidence for issue 8's ConvTranspose3d rows in
docs/perf.md; these shapes are not (yet) `jaxconv3d bench` configurations.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json

import jax
import torch
import torch.nn.functional as F

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import bench, workloads
from jaxconv3d.bench_check import BOUNDS, ResultCheck, reference_results
from jaxconv3d.timing import LoopTimer, l2_cache_bytes


@dataclasses.dataclass(frozen=True)
class TransposeCase:
    name: str
    batch: int
    in_channels: int
    out_channels: int
    spatial: int
    kernel: int
    stride: int
    padding: int = 0
    output_padding: int = 0

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding)

    @property
    def out_spatial(self) -> int:
        return (self.spatial - 1) * self.stride - 2 * self.padding + self.kernel + self.output_padding

    def describe(self) -> str:
        return (f"N{self.batch} C{self.in_channels}->{self.out_channels} {self.spatial}^3->{self.out_spatial}^3 "
                f"k{self.kernel} s{self.stride} p{self.padding} op{self.output_padding}")


CASES = (  # a 3D UNet decoder's up-convolutions (64^3 full resolution, 128 channels up from the bottleneck side)
    TransposeCase("up_k2s2", 2, 128, 64, 32, 2, 2),
    TransposeCase("up_k3s2", 2, 128, 64, 32, 3, 2, padding=1, output_padding=1),
)


def operands(case: TransposeCase, dtype: torch.dtype, device: torch.device, seed: int) -> workloads.Operands:
    g = torch.Generator(device).manual_seed(seed)
    k, s, so = case.kernel, case.spatial, case.out_spatial
    fan_in = case.out_channels * k**3 // case.stride**3  # taps reaching an output, roughly
    return workloads.Operands(
        x=torch.randn((case.batch, case.in_channels, s, s, s), generator=g, device=device, dtype=dtype),
        w=torch.randn((case.in_channels, case.out_channels, k, k, k), generator=g, device=device, dtype=dtype)
        / fan_in**0.5,
        b=None,
        dy=torch.randn((case.batch, case.out_channels, so, so, so), generator=g, device=device, dtype=dtype),
    )


def implementations(case: TransposeCase, precision: workloads.Precision) -> list[tuple[workloads.Implementation, object]]:
    k, s, p, op = case.kernel, case.stride, case.padding, case.output_padding

    def ours_torch(x, w, b):
        return jt.conv_transpose3d(x, w, b, precision=precision.ours, **case.kwargs)

    def ours_jax(x, w, b):
        return jaxconv3d.conv_transpose3d(x, w, b, precision=precision.ours, **case.kwargs)

    def torch_ref(x, w, b):
        return F.conv_transpose3d(x, w, b, **case.kwargs)

    def xla(x, w, b):
        rhs = jax.numpy.flip(jax.numpy.swapaxes(w, 0, 1), (2, 3, 4))  # (C_out, C_in, k...) flipped: OIDHW
        return jax.lax.conv_general_dilated(
            x, rhs, window_strides=(1, 1, 1), padding=[(k - 1 - p, k - 1 - p + op)] * 3, lhs_dilation=(s, s, s),
            dimension_numbers=("NCDHW", "OIDHW", "NCDHW"), precision=precision.lax_precision)

    I = workloads.Implementation
    return [
        (I("jaxconv3d_torch", "ours:torch", "torch", True, None), ours_torch),
        (I("jaxconv3d_torch_ndhwc", "ours:torch:cl", "torch", True, None, channels_last=True), ours_torch),
        (I("jaxconv3d_jax", "ours:jax", "jax", True, None), ours_jax),
        (I("torch", "torch", "torch", False, None), torch_ref),
        (I("torch_ndhwc", "torch:cl", "torch", False, None, channels_last=True), torch_ref),
        (I("xla", "xla", "jax", False, None), xla),
    ]


def run_case(case: TransposeCase, precision: workloads.Precision, device: workloads.Device, timer: LoopTimer,
             reps: int) -> dict:
    dev = device.torch_device
    per_set = 2 * case.batch * (case.in_channels * case.spatial**3 + case.out_channels * case.out_spatial**3)
    sets = max(1, min(16, -(-2 * l2_cache_bytes(dev) // per_set)))
    seed = workloads.case_seed(0, case.name, precision.name)
    generated = [operands(case, precision.torch_dtype, dev, seed + i) for i in range(sets)]

    reference = functools.partial(F.conv_transpose3d, **case.kwargs)
    references = [reference_results(reference, ops) for ops in generated]
    inputs = {
        ("torch", False): [workloads.torch_operands(o, dev) for o in generated],
        ("torch", True): [workloads.torch_operands(o, dev, channels_last=True) for o in generated],
        ("jax", False): [workloads.jax_operands(o, device.jax_device) for o in generated],
    }
    units = []
    with workloads.cudnn_settings(precision):
        for impl, conv in implementations(case, precision):
            for pass_name, fn in workloads.pass_functions(impl, conv).items():
                units.append(bench.Unit(impl, pass_name, fn, inputs[impl.framework, impl.channels_last],
                                        ResultCheck(BOUNDS[precision.name])))
        bench.measure_units(units, timer, references, reps, seed=0)
    out = {}
    for u in units:
        out.setdefault(u.pass_name, {})[u.impl.key] = u.record() | {"label": u.impl.label}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="fp32,tf32,bf16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 repetitions: a smoke run (e.g. on a CPU)")
    args = ap.parse_args()
    cases = [dataclasses.replace(c, batch=1, in_channels=8, out_channels=8, spatial=4) for c in CASES] if args.quick \
        else CASES
    reps = 2 if args.quick else args.reps
    device = workloads.detect_device()
    timer = LoopTimer(device.torch_device)
    print(workloads.run_header("transpose_times", device))
    print(f"timing: {timer.description}")
    results = []
    for case in cases:
        for name in args.precision.split(","):
            precision = workloads.PRECISIONS[name]
            times = run_case(case, precision, device, timer, reps)
            results.append(dict(case=case.name, shape=case.describe(), precision=name, times=times))
            for pass_name, entries in times.items():
                cells = []
                for entry in entries.values():
                    ms = entry.get("median_ms")
                    cells.append(f"{entry['label']} {ms:.3f}" if ms is not None else f"{entry['label']} {entry.get('error')}")
                ours = [e["median_ms"] for k, e in entries.items() if k.startswith("jaxconv3d") and "median_ms" in e]
                refs = [e["median_ms"] for k, e in entries.items() if not k.startswith("jaxconv3d") and "median_ms" in e]
                ratio = f"{min(refs) / min(ours):.2f}x" if ours and refs else "-"
                print(f"{case.name:8} {case.describe():36} {name:4} {pass_name:7} {ratio:>6}  " + "  ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=workloads.environment_info(device), reps=reps, results=results), f, indent=1)


if __name__ == "__main__":
    main()
