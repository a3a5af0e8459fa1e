"""ConvTranspose3d for PyTorch: `conv_transpose3d` (F.conv_transpose3d's signature) and `ConvTranspose3d` (a drop-in
nn.ConvTranspose3d), both our grad-input operation (`_ops.InputGrad`) on the forward problem that
`jaxconv3d._transpose.transpose_config` describes; its backward is the forward conv and grad-weight, so double
backward works. See `jaxconv3d/_transpose.py` for the mapping of PyTorch's arguments.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._transpose_params import transpose_call_config
from . import _checked_and_autocast, _library, _ops, _through_dispatcher


def conv_transpose3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    precision: Any = None,
) -> torch.Tensor:
    """torch.nn.functional.conv_transpose3d on jaxconv3d's kernels (same arguments, results and gradients).

    Args:
        input: (N, C_in, D, H, W) or (C_in, D, H, W). weight: (C_in, C_out/groups, kD, kH, kW). bias: optional.
        stride, padding, output_padding, groups, dilation: as F.conv_transpose3d. precision: as in `conv3d`.

    Returns:
        (N, C_out, Do, Ho, Wo), differentiable to any order.

    Raises:
        ValueError, TypeError: naming the argument and the rule, before any kernel runs.

    Example:
        >>> conv_transpose3d(torch.ones(1, 4, 3, 3, 3), torch.ones(4, 2, 2, 2, 2), stride=2).shape
        torch.Size([1, 2, 6, 6, 6])
    """
    input, weight, bias = _checked_and_autocast(input, weight, bias)
    dispatched = _through_dispatcher(input, weight, bias)
    tc, unbatched = transpose_call_config(
        input, weight, bias, stride=stride, padding=padding, output_padding=output_padding, groups=groups,
        dilation=dilation, precision=precision, memoize=not dispatched,
    )
    if unbatched:
        input = input.unsqueeze(0)
    # Tensors go in as they are (the operations pick contiguous or channels-last views for the kernel family and
    # return the input's memory format, as F.conv_transpose3d does).
    if tc.empty:
        y = input.new_zeros(tc.out_shape)
    elif dispatched:  # one opaque node in a compiled graph, a shape rule for fake tensors (see _library.py)
        y = _library.input_grad(input, weight, list(tc.conv.x_shape), *_ops._attrs(tc.conv))
    else:
        y = _ops.InputGrad.apply(input, weight, tc.conv)
    if any(tc.extra) and not tc.empty:
        y = F.pad(y, [p for e in reversed(tc.extra) for p in (0, e)])
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1, 1)
    if _ops.channels_last(input) and not _ops.channels_last(y):  # F.pad / zeros may have changed it
        y = y.contiguous(memory_format=torch.channels_last_3d)
    return y.squeeze(0) if unbatched else y


class ConvTranspose3d(nn.ConvTranspose3d):
    """Drop-in torch.nn.ConvTranspose3d (same constructor, init, repr, state_dict and `output_size=` in forward)
    running jaxconv3d's kernels.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias, dilation,
        padding_mode, device, dtype: exactly as torch.nn.ConvTranspose3d (padding_mode "zeros" only, as there).
        precision: None / "highest" (float32-accurate) or "tf32".

    Example:
        >>> up = ConvTranspose3d(8, 4, 2, stride=2)
        >>> up(torch.randn(1, 8, 4, 4, 4)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
        output_padding: int | tuple[int, int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int, int] = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        precision: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        self.precision = precision

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.precision is None else f"{s}, precision={self.precision!r}"

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose3d")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 3, self.dilation  # type: ignore[arg-type]
        )
        return conv_transpose3d(
            input, self.weight, self.bias, self.stride, self.padding, tuple(output_padding), self.groups,
            self.dilation, self.precision,
        )
