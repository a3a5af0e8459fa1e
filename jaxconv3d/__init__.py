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

import importlib.util as _util

from ._params import ConvConfig, conv_config

# JAX is optional: the torch front (`jaxconv3d.torch`) runs on torch alone. Where JAX is installed it is loaded
# first, before our extension: on a GPU machine with jax 0.11.2, loading the extension first made the later jaxlib
# import crash. _jax_api imports jax before it imports _ext.
HAVE_JAX = _util.find_spec("jax") is not None and _util.find_spec("jaxlib") is not None
if HAVE_JAX:
    from ._jax_api import conv3d  # isort: skip
    from ._transpose import conv_transpose3d  # isort: skip
    from ._ext import built_with_cuda
    from ._spatial import halo_exchange, sharded_conv3d, sharded_conv_transpose3d
    from ._plan import explain
    from ._ffi import FFI_TARGET_VERSION, export_disabled_checks, register as _register

    _register()  # now, not at the first call: jax.export.deserialize'd programs need the targets too
else:
    from ._ext import built_with_cuda
    from ._plan import explain

    _JAX_NAMES = ("conv3d", "conv_transpose3d", "halo_exchange", "sharded_conv3d", "sharded_conv_transpose3d",
                  "export_disabled_checks", "FFI_TARGET_VERSION")

    def __getattr__(name: str):
        if name in _JAX_NAMES:
            raise ImportError(f"jaxconv3d.{name} needs JAX, which is not installed: pip install 'jaxconv3d[jax]' "
                              "(the torch front, jaxconv3d.torch, needs only torch)")
        raise AttributeError(f"module 'jaxconv3d' has no attribute {name!r}")

__version__ = "0.1.0"
__all__ = ["explain", "conv_config", "ConvConfig", "built_with_cuda", "HAVE_JAX", "__version__"]
if HAVE_JAX:
    __all__ += ["conv3d", "conv_transpose3d", "halo_exchange", "sharded_conv3d", "sharded_conv_transpose3d",
                "export_disabled_checks", "FFI_TARGET_VERSION"]
