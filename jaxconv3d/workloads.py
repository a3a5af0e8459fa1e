"""What `jaxconv3d check` and `jaxconv3d bench` run: the configurations (data/suite.json with its H100 baselines,
a built-in copy of its shapes, a small coverage set, the CPU scale-down), the precisions, device detection, random
operands, and the implementations being compared (our two fronts, torch/cuDNN, XLA)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import jax

from . import __version__, built_with_cuda
from . import conv3d as jax_front_conv3d
from ._params import ConvConfig, conv_config, dtype_name
from .torch import conv3d as torch_front_conv3d

SUITE_ENV_VAR = "JAXCONV3D_SUITE"
SHIPPED_SUITE = Path(__file__).resolve().parent / "data" / "suite.json"  # package data, in the wheel too
CPU_MAX_POSITIONS = 16**3  # CPU scale-down: input positions per configuration ...
CPU_MAX_CHANNELS = 16  # ... and channels, so the whole bench runs in a minute or two on two cores
PASSES = ("fwd", "fwd_bwd")


class UsageError(ValueError):
    """A command-line request that cannot be served (unknown configuration name, ...): reported without a traceback."""


# ---- precisions


@dataclasses.dataclass(frozen=True)
class Precision:
    """A tensor dtype plus whether TF32 tensor-core math is allowed for float32 (cuDNN, XLA and ours alike)."""

    name: str
    torch_dtype: torch.dtype
    tf32: bool = False

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.torch_dtype)

    @property
    def ours(self) -> str | None:
        """jaxconv3d's `precision` argument."""
        return "tf32" if self.tf32 else None

    @property
    def lax_precision(self) -> jax.lax.Precision:
        # HIGHEST keeps XLA's float32 convolutions IEEE-exact (DEFAULT would use TF32 on tensor-core GPUs).
        strict = not self.tf32 and self.torch_dtype in (torch.float32, torch.float64)
        return jax.lax.Precision.HIGHEST if strict else jax.lax.Precision.DEFAULT


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", torch.float32),
        Precision("tf32", torch.float32, tf32=True),
        Precision("bf16", torch.bfloat16),
        Precision("fp16", torch.float16),
        Precision("fp64", torch.float64),
    )
}
GPU_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # what `--precision all` means
CPU_BENCH_PRECISIONS = ("fp32",)


# ---- configurations


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """One named convolution problem. `padding` is anything jaxconv3d accepts: int, 3 ints, 3 (lo, hi) pairs, "same"."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    spatial: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = False
    # suite.json's per-precision H100 timings of the full-size problem; None when unknown or not comparable.
    baseline_h100: dict | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.spatial)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def conv_kwargs(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    @functools.cached_property
    def problem(self) -> ConvConfig:
        """Normalised by jaxconv3d's own rules: per-axis triples, (lo, hi) padding, output shape."""
        b_shape = (self.out_channels,) if self.bias else None
        return conv_config(self.x_shape, self.w_shape, b_shape, **self.conv_kwargs)

    def with_batch(self, batch: int) -> "ConvCase":
        return dataclasses.replace(self, batch=batch)

    def describe(self) -> str:
        """Compact shape, e.g. 'N2 C64->64 64x64x64 k3 p1 g2 +bias'."""
        p = self.problem
        parts = [f"N{p.batch}", f"C{p.in_channels}->{p.out_channels}", "x".join(map(str, p.in_spatial))]
        parts.append("k" + _triple_text(p.kernel))
        if p.stride != (1, 1, 1):
            parts.append("s" + _triple_text(p.stride))
        if p.pad_lo != p.pad_hi:
            parts.append("p" + ",".join(f"{lo}:{hi}" for lo, hi in zip(p.pad_lo, p.pad_hi)))
        elif any(p.pad_lo):
            parts.append("p" + _triple_text(p.pad_lo))
        if p.dilation != (1, 1, 1):
            parts.append("d" + _triple_text(p.dilation))
        if p.groups != 1:
            parts.append(f"g{p.groups}")
        if self.bias:
            parts.append("+bias")
        return " ".join(parts)

    def shape_record(self) -> dict[str, Any]:
        p = self.problem
        return dict(
            input=list(p.x_shape),
            weight=list(p.w_shape),
            output=list(p.y_shape),
            stride=list(p.stride),
            pad_lo=list(p.pad_lo),
            pad_hi=list(p.pad_hi),
            dilation=list(p.dilation),
            groups=p.groups,
            bias=self.bias,
        )


def _triple_text(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


# The seven shapes of suite.json, for when the file cannot be found (its baselines are not copied): a source tree or
# install without jaxconv3d/data/suite.json.
BUILTIN_SUITE = (
    ConvCase("kb54", 16, 3, 64, (64, 64, 64), (3, 3, 3)),
    ConvCase("unet_64", 2, 64, 64, (64, 64, 64), (3, 3, 3), padding=1),
    ConvCase("unet_256", 2, 256, 256, (16, 16, 16), (3, 3, 3), padding=1),
    ConvCase("video_c3d", 4, 64, 128, (16, 56, 56), (3, 3, 3), padding=1),
    ConvCase("down_s2", 4, 32, 64, (64, 64, 64), (3, 3, 3), stride=2, padding=1),
    ConvCase("depthwise", 8, 192, 192, (16, 28, 28), (3, 3, 3), padding=1, groups=192),
    ConvCase("pointwise", 8, 128, 256, (16, 28, 28), (1, 1, 1)),
)

# Small problems spanning the argument space (check's default on CPU): strides, asymmetric and "same" padding,
# dilation, groups, depthwise, unequal kernel sizes, bias on and off, channel counts that are not multiples of 8.
COVERAGE_CASES = (
    ConvCase("basic_bias", 2, 3, 5, (7, 8, 9), (3, 3, 3), padding=1, bias=True),
    ConvCase("stride2_asym_pad", 2, 4, 6, (9, 10, 11), (3, 3, 3), stride=2, padding=((1, 0), (0, 2), (2, 1))),
    ConvCase("dilated", 1, 3, 4, (10, 9, 8), (3, 3, 2), padding=(2, 1, 0), dilation=(2, 1, 3), bias=True),
    ConvCase("groups2", 2, 6, 4, (6, 7, 8), (2, 3, 1), stride=(1, 2, 3), padding=(1, 0, 0), groups=2, bias=True),
    ConvCase("depthwise_same", 2, 8, 8, (6, 8, 10), (3, 2, 3), padding="same", groups=8),
    ConvCase("kernel357", 1, 3, 5, (9, 10, 12), (3, 5, 7), stride=(1, 1, 2), padding=(1, 2, 3), bias=True),
    ConvCase("pointwise_s321", 2, 10, 7, (7, 7, 7), (1, 1, 1), stride=(3, 2, 1)),
)


def find_suite() -> Path | None:
    """$JAXCONV3D_SUITE, else the suite shipped with the package (jaxconv3d/data/suite.json), else None.

    Raises UsageError when $JAXCONV3D_SUITE names no file.
    """
    override = os.environ.get(SUITE_ENV_VAR)
    if override:
        if not Path(override).is_file():
            raise UsageError(f"{SUITE_ENV_VAR}={override} is not a file")
        return Path(override)
    return SHIPPED_SUITE if SHIPPED_SUITE.is_file() else None


def _per_axis(value: Any) -> Any:
    """A suite entry's stride / padding / dilation as the fronts take it: JSON lists become tuples (per axis, or
    (lo, hi) pairs), ints and strings stay."""
    if isinstance(value, list):
        return tuple(_per_axis(v) for v in value)
    return value


def load_suite() -> tuple[tuple[ConvCase, ...], str]:
    """The suite's cases and where they came from."""
    path = find_suite()
    if path is None:
        return BUILTIN_SUITE, "built-in copy of the suite's shapes (no baselines)"
    entries = json.loads(path.read_text())["configs"]
    cases = tuple(
        ConvCase(
            name,
            e["N"],
            e["Cin"],
            e["Cout"],
            tuple(e["DHW"]),
            tuple(e["k"]),
            stride=_per_axis(e.get("stride", 1)),
            padding=_per_axis(e.get("padding", 0)),
            dilation=_per_axis(e.get("dilation", 1)),
            groups=e.get("groups", 1),
            bias=e.get("bias", False),
            baseline_h100=e.get("baseline_h100"),
        )
        for name, e in entries.items()
    )
    return cases, str(path)


def scale_for_cpu(case: ConvCase) -> ConvCase:
    """The same kind of problem sized for a CPU: batch 1, channels capped, at most ~16^3 input positions.

    Kernel, stride, padding and dilation are kept. The H100 baselines are dropped: they time the full-size problem.
    """
    p = case.problem
    in_channels, out_channels = min(p.in_channels, CPU_MAX_CHANNELS), min(p.out_channels, CPU_MAX_CHANNELS)
    # gcd divides both channel counts, so the grouping stays valid, and depthwise stays depthwise (192 -> 16 groups).
    groups = math.gcd(p.groups, in_channels, out_channels)
    shrink = max(1.0, (math.prod(p.in_spatial) / CPU_MAX_POSITIONS) ** (1 / 3))
    spatial = tuple(
        # never smaller than the dilated kernel needs; the epsilon keeps 64 / 4.0000000001 at 16
        max(int(size / shrink + 1e-9), d * (k - 1) + 1 - lo - hi, 1)
        for size, k, d, lo, hi in zip(p.in_spatial, p.kernel, p.dilation, p.pad_lo, p.pad_hi)
    )
    return dataclasses.replace(
        case,
        batch=1,
        in_channels=in_channels,
        out_channels=out_channels,
        spatial=spatial,
        groups=groups,
        baseline_h100=None,
    )


def select_cases(names: Sequence[str] | None, include_suite: bool, device: "Device") -> tuple[list[ConvCase], str]:
    """The suite's cases (scaled down on CPU) when include_suite, then the named ones (suite or coverage set).

    Returns them with the suite's source, for the report.
    """
    suite, source = load_suite()
    if not device.is_gpu:
        suite = tuple(map(scale_for_cpu, suite))
    pool = {case.name: case for case in (*suite, *COVERAGE_CASES)}
    unknown = [name for name in names or () if name not in pool]
    if unknown:
        raise UsageError(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(pool)}")
    chosen = list(suite) if include_suite else []
    chosen += [pool[name] for name in names or () if pool[name] not in chosen]
    return chosen, source


# ---- device and environment


@dataclasses.dataclass(frozen=True)
class Device:
    """Where the kernels under test run: the same accelerator seen from torch and from JAX."""

    torch_device: torch.device
    jax_device: Any
    name: str

    @property
    def is_gpu(self) -> bool:
        return self.torch_device.type == "cuda"


def _jax_gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend
        return []


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def detect_device() -> Device:
    """The GPU when torch and JAX both see one and the extension has CUDA kernels, else the CPU."""
    gpus = _jax_gpus()
    if torch.cuda.is_available() and gpus:
        if built_with_cuda():
            return Device(torch.device("cuda", 0), gpus[0], torch.cuda.get_device_name(0))
        print("note: a GPU is present but the extension was built without CUDA: running on the CPU", file=sys.stderr)
    return Device(torch.device("cpu"), jax.devices("cpu")[0], _cpu_name())


def run_header(command: str, device: Device) -> str:
    versions = f"torch {torch.__version__}, jax {jax.__version__}, jaxconv3d {__version__}"
    return f"jaxconv3d {command} on {device.name}: {versions}"


def environment_info(device: Device) -> dict[str, Any]:
    info = dict(
        device=device.name,
        platform="gpu" if device.is_gpu else "cpu",
        torch=torch.__version__,
        jax=jax.__version__,
        jaxconv3d=__version__,
        python=platform.python_version(),
        host_cpu=_host_cpu(),
        host_cores=os.cpu_count(),
    )
    with contextlib.suppress(ImportError, AttributeError):
        import jaxlib

        info.update(jaxlib=jaxlib.__version__)
    if device.is_gpu:
        props = torch.cuda.get_device_properties(device.torch_device)
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            compute_capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            l2_cache_bytes=getattr(props, "L2_cache_size", None),
            memory_bytes=props.total_memory,
        )
        info.update(_jax_cuda_versions())
    return info


def _host_cpu() -> str:
    """The host processor's model (small calls are host-bound: a slower host slows host-heavy fronts the most)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _jax_cuda_versions() -> dict[str, Any]:
    """The cuDNN and CUDA runtime JAX's GPU plugin loaded (a private API: empty when it moves)."""
    with contextlib.suppress(Exception):
        from jax._src.lib import cuda_versions

        if cuda_versions is not None:
            return dict(
                jax_cudnn=cuda_versions.cudnn_get_version(),
                jax_cuda_runtime=cuda_versions.cuda_runtime_get_version(),
            )
    return {}


# ---- operands


@dataclasses.dataclass
class Operands:
    """The inputs of one forward + backward: input x, weight w, bias b (or None) and the output cotangent dy."""

    x: Any
    w: Any
    b: Any
    dy: Any

    def map(self, fn: Callable[[Any], Any]) -> "Operands":
        return Operands(*(None if v is None else fn(v) for v in (self.x, self.w, self.b, self.dy)))


def case_seed(seed: int, *labels: str) -> int:
    """An independent, reproducible seed per (case, dtype, ...): results do not depend on which other cases run."""
    return seed + zlib.crc32("/".join(labels).encode())


def random_operands(case: ConvCase, dtype: torch.dtype, device: torch.device, seed: int) -> Operands:
    """Fresh standard-normal tensors (never zeros: an unwritten or skipped element must show)."""
    generator = torch.Generator(device).manual_seed(seed)

    def normal(shape: Sequence[int], scale: float = 1.0) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * scale

    fan_in = math.prod(case.w_shape[1:])
    return Operands(
        x=normal(case.x_shape),
        # Scaled like a trained layer so outputs stay O(1) whatever the channel count (float16 never overflows).
        w=normal(case.w_shape, 1 / math.sqrt(fan_in)),
        b=normal((case.out_channels,)) if case.bias else None,
        dy=normal(case.problem.y_shape),
    )


def torch_operands(operands: Operands, device: torch.device, channels_last: bool = False) -> Operands:
    """Copies on `device`; x, w and b become leaves that require grad (dy does not)."""

    def place(t: torch.Tensor) -> torch.Tensor:
        # detach(): a new leaf (it may share storage; nothing writes to operands in place)
        t = t.detach().to(device)
        return t.contiguous(memory_format=torch.channels_last_3d) if channels_last and t.dim() == 5 else t

    placed = operands.map(place)
    for leaf in (placed.x, placed.w, placed.b):
        if leaf is not None:
            leaf.requires_grad_(True)
    return placed


def to_jax(t: torch.Tensor, device: Any) -> jax.Array:
    host = t.detach().cpu()
    # numpy has no bfloat16: go through float32, which holds every bfloat16 value exactly.
    array = host.float().numpy().astype(jax.numpy.bfloat16) if host.dtype == torch.bfloat16 else host.numpy()
    return jax.device_put(array, device)


# (N, C, D, H, W) -> (N, D, H, W, C) for activations; (O, C/g, kD, kH, kW) -> DHWIO (kD, kH, kW, C/g, O) for filters:
# the JAX front's layout="NDHWC" operands (what flax and equinox hold).
_ACT_TO_NDHWC, _FILTER_TO_DHWIO = (0, 2, 3, 4, 1), (2, 3, 4, 1, 0)
_ACT_FROM_NDHWC, _FILTER_FROM_DHWIO = (0, 4, 1, 2, 3), (4, 3, 0, 1, 2)


def jax_operands(operands: Operands, device: Any, channels_last: bool = False) -> Operands:
    """JAX copies on `device`: NCDHW / OIDHW, or with `channels_last` NDHWC / DHWIO (bias and dy alike)."""
    if not channels_last:
        return operands.map(lambda t: to_jax(t, device))
    moved = Operands(
        x=operands.x.permute(_ACT_TO_NDHWC),
        w=operands.w.permute(_FILTER_TO_DHWIO),
        b=operands.b,
        dy=operands.dy.permute(_ACT_TO_NDHWC),
    )
    return moved.map(lambda t: to_jax(t.contiguous(), device))


def logical_result(result: Any, op: str, channels_last: bool, framework: str) -> Any:
    """A result as the NCDHW / OIDHW reference holds it: JAX channels-last results are NDHWC / DHWIO arrays (torch's
    channels_last_3d tensors are logical NCDHW already)."""
    if not channels_last or framework != "jax" or result is None or op == "grad_bias":
        return result
    return result.transpose(_FILTER_FROM_DHWIO if op == "grad_weight" else _ACT_FROM_NDHWC)




# ---- the implementations being compared


def ours_torch(case: ConvCase, precision: Precision) -> Callable:
    return lambda x, w, b: torch_front_conv3d(x, w, b, precision=precision.ours, **case.conv_kwargs)


def ours_jax(case: ConvCase, precision: Precision, channels_last: bool = False) -> Callable:
    layout = "NDHWC" if channels_last else "NCDHW"
    return lambda x, w, b: jax_front_conv3d(x, w, b, precision=precision.ours, layout=layout, **case.conv_kwargs)


def torch_conv(case: ConvCase, precision: Precision | None = None) -> Callable:
    """F.conv3d (cuDNN on GPUs; its TF32 use is set by torch.backends flags, see `cudnn_settings`).

    F.conv3d pads symmetrically only, so asymmetric padding is applied with F.pad first.
    """
    p = case.problem
    if p.pad_lo == p.pad_hi:
        pad_first, padding = None, p.pad_lo
    else:  # F.pad lists the last axis first: (w_lo, w_hi, h_lo, h_hi, d_lo, d_hi)
        pad_first, padding = [n for lo, hi in reversed(list(zip(p.pad_lo, p.pad_hi))) for n in (lo, hi)], 0

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        x = x if pad_first is None else F.pad(x, pad_first)
        return F.conv3d(x, w, b, p.stride, padding, p.dilation, p.groups)

    return conv


def lax_conv(case: ConvCase, precision: Precision, channels_last: bool = False) -> Callable:
    """jax.lax.conv_general_dilated (cuDNN through XLA on GPUs) with torch's NCDHW / OIDHW layout, or with
    `channels_last` flax's NDHWC / DHWIO."""
    p = case.problem
    numbers = ("NDHWC", "DHWIO", "NDHWC") if channels_last else ("NCDHW", "OIDHW", "NCDHW")
    bias_shape = (1, 1, 1, 1, -1) if channels_last else (1, -1, 1, 1, 1)

    def conv(x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=p.stride,
            padding=list(zip(p.pad_lo, p.pad_hi)),
            rhs_dilation=p.dilation,
            dimension_numbers=numbers,
            feature_group_count=p.groups,
            precision=precision.lax_precision,
        )
        return y if b is None else y + b.reshape(bias_shape)

    return conv


@dataclasses.dataclass(frozen=True)
class Implementation:
    key: str  # JSON key
    label: str  # table column
    framework: str  # "torch" or "jax": which operands it takes
    ours: bool
    make_conv: Callable[..., Callable]  # (case, precision, channels_last) -> conv(x, w, b)
    # torch: operands (x, w, dy) in torch.channels_last_3d memory format; jax: NDHWC / DHWIO arrays
    channels_last: bool = False

    def conv(self, case: ConvCase, precision: Precision) -> Callable:
        if self.framework == "jax":
            return self.make_conv(case, precision, self.channels_last)
        return self.make_conv(case, precision)


IMPLEMENTATIONS = (
    Implementation("jaxconv3d_torch", "ours:torch", "torch", True, ours_torch),
    Implementation("jaxconv3d_torch_ndhwc", "ours:torch:cl", "torch", True, ours_torch, channels_last=True),
    Implementation("jaxconv3d_jax", "ours:jax", "jax", True, ours_jax),
    Implementation("jaxconv3d_jax_ndhwc", "ours:jax:cl", "jax", True, ours_jax, channels_last=True),
    Implementation("torch", "torch", "torch", False, torch_conv),
    Implementation("torch_ndhwc", "torch:cl", "torch", False, torch_conv, channels_last=True),
    Implementation("xla", "xla", "jax", False, lax_conv),
    Implementation("xla_ndhwc", "xla:cl", "jax", False, lax_conv, channels_last=True),
)


def torch_forward_and_grads(conv: Callable, operands: Operands) -> tuple:
    """(y, dx, dw, db): y = conv(x, w, b) and the gradients of <y, dy> with respect to those of x, w, b that
    require grad (None for the others), so a caller asks only for the work it needs."""
    y = conv(operands.x, operands.w, operands.b)
    leaves = (operands.x, operands.w, operands.b)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(y, wanted, operands.dy) if wanted else ())
    return (y, *(next(grads) if t is not None and t.requires_grad else None for t in leaves))


def jax_forward_and_grads(conv: Callable) -> Callable:
    """Jitted (x, w, b, dy) -> (y, dx, dw, db), db None without bias. Returning y keeps XLA from dropping the
    forward pass, which the gradients of a linear map do not need."""

    def run(x, w, b, dy):
        if b is None:
            y, vjp = jax.vjp(lambda x, w: conv(x, w, None), x, w)
            return (y, *vjp(dy), None)
        y, vjp = jax.vjp(conv, x, w, b)
        return (y, *vjp(dy))

    return jax.jit(run)


def pass_functions(impl: Implementation, conv: Callable) -> dict[str, Callable[[Operands], Any]]:
    """operands -> result, for the forward pass and for forward + grad-input + grad-weight (+ grad-bias)."""
    if impl.framework == "torch":

        def forward(ops: Operands) -> torch.Tensor:
            with torch.no_grad():  # nothing saved for a backward that will not come
                return conv(ops.x, ops.w, ops.b)

        return {"fwd": forward, "fwd_bwd": lambda ops: torch_forward_and_grads(conv, ops)}
    forward_jit, forward_and_grads = jax.jit(conv), jax_forward_and_grads(conv)
    return {
        "fwd": lambda ops: forward_jit(ops.x, ops.w, ops.b),
        "fwd_bwd": lambda ops: forward_and_grads(ops.x, ops.w, ops.b, ops.dy),
    }


@contextlib.contextmanager
def cudnn_settings(precision: Precision):
    """cuDNN as the suite measured it: autotuned (benchmark=True), TF32 only for tf32. Restored afterwards."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = True, precision.tf32
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved


