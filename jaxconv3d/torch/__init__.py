"""The PyTorch front: `conv3d` (F.conv3d's signature), `Conv3d` (a drop-in nn.Conv3d), `conv_transpose3d` and
`ConvTranspose3d` (in `_transpose.py`) and `convert_conv3d`.

Arguments are normalised by the same `conv_config` as the JAX front; tensors go to our kernels through DLPack
(`_ops.py`) with no JAX dispatch, so JAX and torch give bitwise-identical results.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad as _forward_ad
from torch.nn.modules.lazy import LazyModuleMixin

from .._params import call_config
from . import _library, _ops

__all__ = ["conv3d", "Conv3d", "conv_transpose3d", "ConvTranspose3d", "convert_conv3d"]


def _check_devices(**tensors: torch.Tensor | None) -> None:
    named = [(k, t) for k, t in tensors.items() if t is not None]
    for k, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{k} must be a torch.Tensor, got {type(t).__name__}")
    first_name, first = named[0]
    for k, t in named[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{k} is on {t.device} but {first_name} is on {first.device}: all tensors must be on one device"
            )
    if first.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{first_name} is on {first.device}; jaxconv3d runs on cpu and cuda devices")


def _autocast(t: torch.Tensor | None, device_type: str, dtype: torch.dtype) -> torch.Tensor | None:
    """autocast's own rule for an argument of a lower-precision op (at::autocast::cached_cast): floating tensors on
    the autocast device, except float64, are cast; anything else is left alone."""
    if t is None or not t.is_floating_point() or t.dtype == torch.float64 or t.device.type != device_type:
        return t
    return t.to(dtype)


def _checked_and_autocast(input, weight, bias):
    """Device checks, then the casting rule autocast applies to F.conv3d / F.conv_transpose3d (a lower-precision
    op: compute in the autocast dtype, float64 stays float64)."""
    _check_devices(input=input, weight=weight, bias=bias)
    device_type = input.device.type
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        input, weight, bias = (_autocast(t, device_type, dtype) for t in (input, weight, bias))
    return input, weight, bias


_PLAIN = (torch.Tensor, nn.Parameter)


def _through_dispatcher(*tensors: torch.Tensor | None) -> bool:
    """Whether a call must go through the torch.library ops rather than the autograd.Functions' DLPack door:
    while compiling, under a Python dispatch mode (FakeTensorMode, FlopCounterMode, ...), or with fake, meta or
    other subclass tensors. The door must never see such tensors (it would read their non-existent data)."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return True
    return any(t is not None and (type(t) not in _PLAIN or t.is_meta) for t in tensors)


def conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    precision: Any = None,
) -> torch.Tensor:
    """torch.nn.functional.conv3d on jaxconv3d's kernels (same arguments, results and gradients).

    Args:
        input: (N, C, D, H, W) or (C, D, H, W); float32, float64, bfloat16 or float16; any memory format
            (channels_last_3d in gives channels_last_3d out, as F.conv3d).
        weight: (O, C/groups, kD, kH, kW). bias: optional (O,).
        stride, padding, dilation, groups: as F.conv3d (padding also 3 (lo, hi) pairs).
        precision: None / "highest" (float32-accurate, the default, whatever torch.backends.cudnn.allow_tf32 says)
            or "tf32".

    Returns:
        The convolution, differentiable to any order (autograd, torch.func, torch.compile, torch.export).

    Raises:
        ValueError, TypeError: naming the argument and the rule, before any kernel runs.

    Example:
        >>> conv3d(torch.ones(1, 2, 4, 4, 4), torch.ones(3, 2, 3, 3, 3), padding=1).shape
        torch.Size([1, 3, 4, 4, 4])
    """
    args = (stride, padding, dilation, groups, precision)
    key = _repeat_key(input, weight, bias, args)
    known = None if key is None else _VALIDATED.get(key)
    if known is None:
        input, weight, bias = _checked_and_autocast(input, weight, bias)
        dispatched = _through_dispatcher(input, weight, bias)
        known = call_config(
            input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
            precision=precision, memoize=not dispatched,
        )
        if dispatched:  # one opaque node in a compiled graph, a shape rule for fake tensors (see _library.py)
            cfg, unbatched = known
            y = _library.conv3d(input.unsqueeze(0) if unbatched else input, weight, bias, *_ops._attrs(cfg))
            return y.squeeze(0) if unbatched else y
        if key is not None:
            _remember(key, known)
    cfg, unbatched = known
    if unbatched:
        input = input.unsqueeze(0)
    # Tensors go in as they are: the operations hand the kernels contiguous tensors or channels-last views, whichever
    # the device's kernel family wants, and return y in the input's memory format (channels_last_3d in,
    # channels_last_3d out, as F.conv3d does).
    if _needs_graph(input, weight, bias):
        y = _ops.ConvFunction.apply(input, weight, bias, cfg)
    else:  # nothing to differentiate: the operation itself, without an autograd node
        y = _ops.fwd(input, weight, bias, cfg)
    return y.squeeze(0) if unbatched else y


# ---- the per-call fast path: a call repeating one already validated (same shapes, dtypes, devices and plain
# arguments, nothing compiling or dispatching, no autocast) reuses its ConvConfig without re-running the checks.

_VALIDATED: dict = {}
_VALIDATED_MAX = 4096


def _plain_args(args: tuple) -> bool:
    """Whether every argument is an int, a string, None or a tuple of ints: arguments whose equality implies equal
    meaning (True == 1 and 1.0 == 1 would not, so bools, floats, lists and pairs never take the fast path; they are
    validated every call). Plain loops: this runs on every call, and generator frames cost more than the checks."""
    for v in args:
        t = type(v)
        if t is tuple:
            for e in v:
                if type(e) is not int:
                    return False
        elif not (t is int or t is str or v is None):
            return False
    return True


def _repeat_key(input: Any, weight: Any, bias: Any, args: tuple) -> tuple | None:
    if type(input) not in _PLAIN or type(weight) not in _PLAIN or (bias is not None and type(bias) not in _PLAIN):
        return None
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() or torch._C._is_any_autocast_enabled():
        return None
    if not _plain_args(args):
        return None
    if bias is None:
        return (input.shape, weight.shape, input.dtype, weight.dtype, input.device, weight.device, args)
    return (input.shape, weight.shape, input.dtype, weight.dtype, input.device, weight.device, args, bias.shape,
            bias.dtype, bias.device)


def _remember(key: tuple, known: tuple) -> None:
    if len(_VALIDATED) >= _VALIDATED_MAX:
        _VALIDATED.clear()
    _VALIDATED[key] = known


def _needs_graph(*tensors: torch.Tensor | None) -> bool:
    """Whether the call must go through the autograd.Function: something may differentiate it (grad mode with an
    operand that requires grad, a forward-mode dual level, a torch.func transform)."""
    if torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class Conv3d(nn.Conv3d):
    """Drop-in torch.nn.Conv3d (same constructor, init, repr and state_dict) running jaxconv3d's kernels.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device,
        dtype: exactly as torch.nn.Conv3d (padding also "same" / "valid"; padding_mode "zeros", "reflect",
            "replicate" or "circular", the non-zero modes applied with F.pad first).
        precision: None / "highest" (float32-accurate, the default whatever torch's TF32 flags say) or "tf32".

    Raises:
        ValueError, TypeError: as nn.Conv3d for bad constructor arguments; on call, for inputs that do not fit the
            layer (naming the argument and the rule) before any kernel runs.

    Example:
        >>> layer = Conv3d(4, 8, 3, padding=1)
        >>> layer(torch.randn(2, 4, 8, 8, 8)).shape
        torch.Size([2, 8, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: str | int | tuple[int, int, int] = 0,
        dilation: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        precision: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype)
        self.precision = precision

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.precision is None else f"{s}, precision={self.precision!r}"

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding: Any = 0
        else:
            padding = self.padding
        return conv3d(input, weight, bias, self.stride, padding, self.dilation, self.groups, self.precision)


def _swap(old: nn.Module, precision: Any) -> nn.Module:
    """Our Conv3d / ConvTranspose3d sharing old's Parameter objects, buffers, hooks and flags (no copy, no
    re-init)."""
    cls = ConvTranspose3d if isinstance(old, nn.ConvTranspose3d) else Conv3d
    cls = cls if type(old) in (nn.Conv3d, nn.ConvTranspose3d) else _derived(type(old), cls)
    new = cls.__new__(cls)
    state = dict(old.__dict__)
    for key, value in state.items():  # own containers, shared contents
        if isinstance(value, collections.OrderedDict):
            state[key] = collections.OrderedDict(value)
        elif isinstance(value, dict):
            state[key] = dict(value)
    new.__dict__.update(state)
    new.precision = precision
    return new


@functools.lru_cache(maxsize=None)
def _derived(old_cls: type, ours: type) -> type:
    """The class a swapped module gets when its own is not plain nn.Conv3d / nn.ConvTranspose3d: old_cls first (the
    properties of a parametrization's generated class, a lazy module's parameter inference, a user subclass's
    methods), then ours (its `_conv_forward` / `forward` on our kernels). A lazy module becomes `ours` once its
    parameters are materialised (torch's `cls_to_become`)."""
    body: dict = {"__module__": old_cls.__module__}
    if issubclass(old_cls, LazyModuleMixin):
        body["cls_to_become"] = ours
    return type(old_cls.__name__, (old_cls, ours), body)


def _swappable(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and not isinstance(m, (Conv3d, ConvTranspose3d))


def convert_conv3d(
    model: nn.Module,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    *,
    precision: Any = None,
) -> nn.Module:
    """Replace torch.nn.Conv3d and nn.ConvTranspose3d modules by jaxconv3d's, sharing the same parameters.

    Parameters, buffers, hooks and flags are shared, not copied, so optimizer state stays valid; parametrized
    (e.g. weight_norm) and lazy modules keep working.

    Args:
        model: any module (it may itself be a Conv3d / ConvTranspose3d).
        filter_fn: optional `(module, qualified_name) -> bool`; only modules for which it is true are swapped.
        precision: the swapped layers' `precision` (None / "highest" or "tf32").

    Returns:
        The root: `model` itself (modified in place), or a new module when `model` itself was swapped.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.ReLU())
        >>> type(convert_conv3d(net)[0]).__module__
        'jaxconv3d.torch'
    """
    if _swappable(model):
        return _swap(model, precision) if filter_fn is None or filter_fn(model, "") else model
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not _swappable(child):
                continue
            qualified = f"{name}.{child_name}" if name else child_name
            if filter_fn is None or filter_fn(child, qualified):
                setattr(module, child_name, _swap(child, precision))
    return model


# Last: _transpose.py uses _checked_and_autocast above.
from ._transpose import ConvTranspose3d, conv_transpose3d  # noqa: E402
