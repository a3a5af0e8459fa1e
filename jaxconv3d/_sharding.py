"""Partitioning rules for plain `jit` over sharded arrays (data parallelism without shard_map).

Without them XLA would gather every operand of our custom calls onto every device and compute the whole
convolution on each. With them (`jax.experimental.custom_partitioning`) an activation's batch axis keeps its
sharding: every device convolves its own slice of the batch with the replicated filter, and the two reductions over
the batch (grad-weight, grad-bias) finish with a psum over the batch's mesh axes. Channel and spatial axes are
replicated (a spatially sharded convolution would need halo exchange).

Single-device programs and programs inside shard_map never reach these rules: JAX inlines the wrapped call there.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from ._params import ConvConfig

ACT, FILT, BIAS = "act", "w", "b"  # (N, C, D, H, W) activation, (O, C/g, k...) filter, (O,) bias


def _batch_spec(arg_shapes, in_roles):
    """The mesh and mesh axes of the first activation operand's batch dimension (None: not batch-sharded)."""
    for shape, role in zip(arg_shapes, in_roles):
        sharding = shape.sharding
        if role == ACT and isinstance(sharding, NamedSharding) and len(sharding.spec) and sharding.spec[0]:
            return sharding.mesh, sharding.spec[0]
    return None, None


def _sharding(mesh, ndim: int, batch) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(batch, *([None] * (ndim - 1))))


def _axes(batch) -> tuple:
    return (batch,) if isinstance(batch, str) else tuple(batch or ())


def _rule(in_roles: Sequence[str], out_role: str) -> tuple[str, tuple[str, ...]]:
    """Shardy rule: the batch factor `n` passes through activations; every other factor stays replicated."""
    fresh = iter(f"f{i}" for i in range(64))
    operands, replicated = [], []

    def dims(role):
        names = ["n"] if role == ACT else []
        rank = {ACT: 4, FILT: 5, BIAS: 1}[role]
        for _ in range(rank):
            replicated.append(next(fresh))
            names.append(replicated[-1])
        return " ".join(names)

    for role in in_roles:
        operands.append(dims(role))
    result = dims(out_role)
    return f"{', '.join(operands)} -> {result}", tuple(replicated)


def batch_partitioned(call: Callable, in_roles: Sequence[str], out_role: str) -> Callable:
    """Wrap `call(*arrays, cfg)` so a batch-sharded activation stays sharded under jit."""
    n = len(in_roles)

    @functools.partial(custom_partitioning, static_argnums=(n,))
    def op(*args):
        return call(*args)

    def partition(cfg: ConvConfig, mesh, arg_shapes, result_shape):
        found_mesh, batch = _batch_spec(arg_shapes, in_roles)
        mesh = found_mesh or mesh
        arg_shardings = tuple(
            _sharding(mesh, len(s.shape), batch if role == ACT else None) for s, role in zip(arg_shapes, in_roles)
        )
        out_sharding = _sharding(mesh, len(result_shape.shape), batch if out_role == ACT else None)
        reduce_axes = _axes(batch) if out_role != ACT else ()

        def lower(*arrays):
            local = cfg.replace(batch=next(a.shape[0] for a, r in zip(arrays, in_roles) if r == ACT))
            out = call(*arrays, local)
            return jax.lax.psum(out, reduce_axes) if reduce_axes else out

        return mesh, lower, out_sharding, arg_shardings

    def infer(cfg, mesh, arg_shapes, result_shape):
        found_mesh, batch = _batch_spec(arg_shapes, in_roles)
        return _sharding(found_mesh or mesh, len(result_shape.shape), batch if out_role == ACT else None)

    rule, replicated = _rule(in_roles, out_role)
    try:
        op.def_partition(
            partition=partition,
            infer_sharding_from_operands=infer,
            propagate_user_sharding=None,
            sharding_rule=rule,
            need_replication_factors=replicated,
        )
    except TypeError:  # custom_partitioning is experimental: on an API it does not know, gather (still correct)
        return call
    return op
