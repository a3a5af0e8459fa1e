"""Convolution configurations the tests sweep: every feature of the API at small sizes."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    x_shape: tuple
    w_shape: tuple
    bias: bool = True
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


CASES = [
    Case("k3_pad1", (2, 3, 6, 7, 8), (4, 3, 3, 3, 3), padding=1),
    Case("stride2_kernel135", (2, 4, 7, 9, 11), (5, 4, 1, 3, 5), stride=2, padding=(0, 1, 2)),
    Case("asym_pad_dilation", (1, 3, 6, 8, 9), (4, 3, 2, 3, 2), padding=((1, 0), (0, 2), (2, 1)), dilation=(2, 1, 3)),
    Case("groups2_mixed_stride", (2, 4, 9, 8, 10), (6, 2, 3, 2, 3), stride=(2, 1, 3), dilation=2, groups=2, padding=1),
    Case("depthwise_same", (2, 6, 5, 6, 7), (6, 1, 3, 3, 3), padding="same", groups=6),
    Case("depthwise_multiplier", (1, 4, 6, 5, 7), (8, 1, 3, 2, 3), groups=4, stride=(1, 2, 1), bias=False),
    Case("valid_k357", (1, 3, 7, 9, 11), (4, 3, 3, 5, 7), padding="valid"),
    Case("pointwise", (2, 5, 4, 5, 6), (7, 5, 1, 1, 1)),
    Case("k7_pad3", (1, 2, 8, 9, 10), (3, 2, 7, 7, 7), padding=3, bias=False),
    Case("same_dilated", (1, 3, 7, 6, 8), (5, 3, 3, 2, 4), padding="same", dilation=(1, 2, 2)),
    Case("stride3_odd_channels", (3, 5, 10, 11, 9), (7, 5, 2, 3, 3), stride=3, padding=(2, 0, 1)),
]
