"""Ask the dispatcher (`cuda/dispatch.cc`) which kernel family runs an operation, and in which memory layout.

Both fronts come here before every kernel call: the JAX front to decide whether to transpose around the FFI call,
the torch front to decide whether to hand over NCDHW tensors or channels-last views. Answers are memoised on
(config, dtype, compute capability, operation, caller's layout, JAXCONV3D_FAMILY), so a training step costs a dict
lookup. `explain()` is the public view of the same answers.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

from . import _ext
from ._params import ConvConfig, check_dtypes, conv_config, dtype_name, is_symbolic

OPS = ("forward", "grad_input", "grad_weight", "grads")  # grads: grad-input and grad-weight as one launch
NCDHW, NDHWC = 0, 1
LAYOUTS = {"NCDHW": NCDHW, "NDHWC": NDHWC}
_DTYPE_CODES = {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3}


# CPython's os.environ store: a lookup there skips os.environ.get's re-encoding of the key (~1.3 us of a torch call's
# ~27 us host cost on an H100 machine, docs/perf.md v28). Writes through os.environ (monkeypatch.setenv too) land in
# it, and in the process environment the C++ doors read.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_FAMILY_KEY = os.environ.encodekey("JAXCONV3D_FAMILY") if _ENVIRON_DATA is not None else None


def family_override() -> str:
    """JAXCONV3D_FAMILY as it is now ("" when unset). Read at every call, never cached: a test or a user may change it
    between calls, and the C++ doors read it at every launch; plans are memoised with it in their key."""
    if _ENVIRON_DATA is None:
        return os.environ.get("JAXCONV3D_FAMILY", "")
    value = _ENVIRON_DATA.get(_FAMILY_KEY)
    return "" if value is None else os.environ.decodevalue(value)


def layout_code(layout: Any) -> int:
    """'NCDHW' -> 0, 'NDHWC' -> 1 (ValueError naming the argument otherwise)."""
    if isinstance(layout, str) and layout.upper() in LAYOUTS:
        return LAYOUTS[layout.upper()]
    raise ValueError(f"layout must be 'NCDHW' or 'NDHWC', got {layout!r}")


def to_layout(shape: Sequence[int], layout: int) -> tuple[int, ...]:
    """A logical (outer, C, D, H, W) shape as it lies in memory in `layout` ((outer, D, H, W, C) for NDHWC). The
    same rule maps OIDHW weights to ODHWI."""
    shape = tuple(shape)
    return (shape[0], *shape[2:], shape[1]) if layout == NDHWC else shape


def plan(cfg: ConvConfig, dtype: Any, cc: int, op: str, layout: int = NCDHW) -> dict:
    """The dispatcher's answer for one operation: {family, tile, layout ('NCDHW'/'NDHWC'), workspace_bytes, rule}.
    `cc`: 10 * major + minor of the GPU (90 for Hopper), 0 for the CPU. `layout`: the caller's own layout (the cpu
    family takes either; GPU families name theirs).

    A symbolic batch (jax.export's shape polymorphism, torch's dynamic shapes) is planned at batch 1 and at a batch
    with `SYMBOLIC_PLAN_POSITIONS` output positions: every family's split workspace grows with the batch up to a cap
    (a fixed number of blocks) that this size reaches, so the one workspace fixed at trace time serves any batch
    (the doors check it at run time). Where the two batches would get kernels of different layouts, no single
    program serves every batch: ValueError."""
    env = family_override()
    if not is_symbolic(cfg.batch):
        return _plan(cfg, dtype_name(dtype), int(cc), op, int(layout), env)
    big = max(1, -(-SYMBOLIC_PLAN_POSITIONS // math.prod(cfg.out_spatial)))
    small, large = (_plan(cfg.replace(batch=n), dtype_name(dtype), int(cc), op, int(layout), env) for n in (1, big))
    if small["layout"] != large["layout"]:
        raise ValueError(
            f"with a symbolic batch, {op} would run {small['family']} ({small['layout']}) for small batches and "
            f"{large['family']} ({large['layout']}) for large ones on this device; export with a static batch"
        )
    return dict(large, workspace_bytes=max(small["workspace_bytes"], large["workspace_bytes"]))


SYMBOLIC_PLAN_POSITIONS = 1 << 24


@functools.lru_cache(maxsize=4096)
def _plan(cfg: ConvConfig, dtype: str, cc: int, op: str, layout: int, family_env: str) -> dict:
    a = cfg.attrs()
    return _ext.plan(
        op, to_layout(cfg.x_shape, layout), to_layout(cfg.w_shape, layout), to_layout(cfg.y_shape, layout),
        a["stride"], a["pad_lo"], a["pad_hi"], a["dilation"], a["groups"], a["math"], _DTYPE_CODES[dtype], layout,
        cc,
    )


def native_layout(cfg: ConvConfig, dtype: Any, cc: int, op: str, layout: int = NCDHW) -> int:
    """The layout the chosen family's kernels read and write (0: NCDHW, 1: NDHWC)."""
    return LAYOUTS[plan(cfg, dtype, cc, op, layout)["layout"]]


# ---- compute capability of the device a call runs on


def cc_of(device: Any = None) -> int:
    """Compute capability (10 * major + minor; 0 for the CPU) of `device`: None (JAX's default device; without JAX
    installed, torch's current CUDA device, else the CPU), an int cc, 'cpu', 'cuda:9.0' / 'gpu:9.0' (an explicit
    capability), a JAX device or a torch device."""
    if device is None:
        return _default_cc()
    if isinstance(device, bool):
        raise TypeError(f"device must be a device, a device string or a compute capability, got {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"cc must be >= 0 (0 means the CPU), got {device}")
        return device
    if isinstance(device, str):
        kind, _, rest = device.partition(":")
        if kind.lower() == "cpu":
            return 0
        if kind.lower() in ("cuda", "gpu") and "." in rest:
            major, _, minor = rest.partition(".")
            if major.isdigit() and minor.isdigit():
                return 10 * int(major) + int(minor)
        if kind.lower() in ("cuda", "gpu"):
            return _torch_cc(device)
        raise ValueError(f"device must be 'cpu', 'cuda[:index]' or 'cuda:<major>.<minor>', got {device!r}")
    if type(device).__module__.startswith("torch"):
        return _torch_cc(device)
    return _jax_cc(device)


def _jax_cc(device: Any) -> int:
    if getattr(device, "platform", "cpu") == "cpu":
        return 0
    text = str(getattr(device, "compute_capability", "0.0"))
    major, _, minor = text.partition(".")
    return 10 * int(major) + int(minor or 0)


@functools.lru_cache(maxsize=None)
def _default_cc() -> int:
    """JAX's default device; without JAX installed (the package's HAVE_JAX), torch's current CUDA device, else 0."""
    from . import HAVE_JAX

    if HAVE_JAX:
        import jax

        return _jax_cc(jax.devices()[0])
    try:
        import torch
    except ImportError:
        return 0
    return _torch_cc("cuda") if torch.cuda.is_available() else 0


@functools.lru_cache(maxsize=64)
def _torch_cc(device: Any) -> int:
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def explain(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    dtype: Any = "float32",
    precision: Any = None,
    layout: str = "NCDHW",
    device: Any = None,
    cc: int | None = None,
) -> dict:
    """Which kernel family and tile run forward, grad-input and grad-weight of a convolution.

    Args:
        x_shape, w_shape, stride, padding, dilation, groups, precision, layout: those of `jaxconv3d.conv3d` (with
            `layout="NDHWC"`: x (N, D, H, W, C), w in DHWIO).
        dtype: the operands' dtype (a name, or a numpy / JAX / torch dtype).
        device: None (JAX's default device), 'cpu', 'cuda:9.0' (any capability, answered without a GPU), a JAX or
            torch device; or give `cc` (10 * major + minor, e.g. 90; 0 = CPU) directly.

    Returns:
        {op: {family, tile, layout, workspace_bytes, rule}} for op in 'forward', 'grad_input', 'grad_weight', and
        'grads': the fused kernel that computes grad-input and grad-weight of one backward in one launch (bitwise
        the two operations' results), or family '' where they run apart.
        JAXCONV3D_FAMILY in the environment is honoured, as it is by the kernels.

    Raises:
        ValueError, TypeError: for arguments `conv3d` would refuse, and a bad `layout`, `device` or `cc`.

    Example:
        >>> explain((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), padding=1, dtype="bfloat16", cc=80)["forward"]["family"]
        'sm80'
    """
    code = layout_code(layout)
    dt = check_dtypes(dtype=dtype)
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if code == NDHWC:
        x_shape, w_shape = ndhwc_to_logical(x_shape, w_shape)
    if len(x_shape) == 4:
        x_shape = (1, *x_shape)
    cfg = conv_config(x_shape, w_shape, None, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      precision=precision)
    capability = cc_of(device if cc is None else cc)
    return {op: dict(plan(cfg, dt, capability, op, code)) for op in OPS}


def ndhwc_to_logical(x_shape: tuple, w_shape: tuple) -> tuple[tuple, tuple]:
    """Shapes of the NDHWC convention (x (N, D, H, W, C) or (D, H, W, C), w DHWIO) as NCDHW / OIDHW shapes."""
    if len(x_shape) not in (4, 5):
        raise ValueError(f"input must have shape (N, D, H, W, C) or (D, H, W, C), got rank {len(x_shape)}")
    if len(w_shape) != 5:
        raise ValueError(f"weight must have shape (kD, kH, kW, in_channels/groups, out_channels), got {w_shape}")
    x = (*x_shape[:-4], x_shape[-1], *x_shape[-4:-1])
    w = (w_shape[4], w_shape[3], *w_shape[:3])
    return x, w


def logical_to_ndhwc(x_shape: Sequence[int], w_shape: Sequence[int]) -> tuple[tuple, tuple]:
    """NCDHW / OIDHW shapes in the NDHWC convention (x (N, D, H, W, C), w DHWIO): the inverse of ndhwc_to_logical."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    return (x_shape[0], *x_shape[2:], x_shape[1]), (*w_shape[2:], w_shape[1], w_shape[0])
