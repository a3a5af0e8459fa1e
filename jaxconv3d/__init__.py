"""jaxconv3d: 3D convolution (PyTorch nn.Conv3d semantics) as our own CUDA/C++ kernels for JAX and PyTorch.

JAX: `jaxconv3d.conv3d(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, precision=None,
layout="NCDHW")`,
`jaxconv3d.conv_transpose3d(x, w, b=None, *, stride=1, padding=0, output_padding=0, groups=1, dilation=1)`.
Spatial sharding inside shard_map: `jaxconv3d.halo_exchange`, `sharded_conv3d`, `sharded_conv_transpose3d` (plain jit
needs none of them).
jax.export: pass `disabled_checks=jaxconv3d.export_disabled_checks()`; a symbolic batch dimension is supported.
Dispatch: `jaxconv3d.explain(x_shape, w_shape, ...)` names the kernel family and tile of each operation.
Layers (optional, imported only when asked for): `jaxconv3d.flax.Conv3d` (nnx), `jaxconv3d.flax.LinenConv3d`,
`jaxconv3d.equinox.Conv3d`.
PyTorch: `jaxconv3d.torch.conv3d`, `conv_transpose3d`, `Conv3d`, `ConvTranspose3d`, `convert_conv3d`.
"""

# jax (and so jaxlib) must be loaded before our extension: on a GPU machine with jax 0.11.2 loading the extension
# first made the later jaxlib import crash. _jax_api imports jax before it imports _ext.
from ._jax_api import conv3d  # isort: skip
from ._transpose import conv_transpose3d  # isort: skip
from ._ext import built_with_cuda
from ._spatial import halo_exchange, sharded_conv3d, sharded_conv_transpose3d
from ._params import ConvConfig, conv_config
from ._plan import explain
from ._ffi import FFI_TARGET_VERSION, export_disabled_checks, register as _register

_register()  # now, not at the first call: jax.export.deserialize'd programs need the targets too

__version__ = "0.1.0"
__all__ = [
    "conv3d", "conv_transpose3d", "halo_exchange", "sharded_conv3d", "sharded_conv_transpose3d", "explain",
    "conv_config", "ConvConfig", "built_with_cuda", "export_disabled_checks", "FFI_TARGET_VERSION", "__version__",
]
