"""Partitioning rules for plain `jit` over sharded arrays (data parallelism and spatial parallelism without
shard_map).

Without them XLA would gather every operand of our custom calls onto every device and compute the whole
convolution on each. With them (`jax.experimental.custom_partitioning`) an activation keeps its sharding along the
batch and along any of D, H, W:

- batch: every device convolves its own slice of the batch with the replicated filter;
- spatial (the halo plan, `_halo_plan`): every device holds a slab of the volume; it receives from its two
  neighbours the rows its output window reads beyond its slab (`ppermute`, only the halo's width), convolves the
  extended slab with our kernel, and keeps its slab of the output. Grad-input runs the kernel on the local output
  gradient and sends the halo part of the result back to its owner, which adds it (the transpose of the exchange);
  grad-weight runs on the exchanged slab. With one sharded axis the extended slab is not built (`split_plan`): the
  kernel runs on the slab and on one thin input per halo, whose results add up to the extended slab's;
- grad-weight and grad-bias (reductions over batch and space) finish with a psum over the mesh axes involved.

A spatial axis sharded over P devices is halo-exchanged when its plan is well defined: the input length L and the
output length L_out satisfy L_out * stride == L (for example padding "same" with stride 1, or kernel 3 / padding 1
/ stride 2 on an even length), P divides L, the stride divides each slab (n = L / P), and each halo fits in one
neighbour's slab (pad_lo <= n and span - stride - pad_lo <= n, span = dilation * (kernel - 1) + 1). Otherwise
that axis is gathered (replicated) for the call and the result is correct, just not spatially parallel; see
docs/design.md. Channel axes are always replicated.

Single-device programs and programs inside shard_map never reach these rules: JAX inlines the wrapped call there
(under shard_map, `jaxconv3d.halo_exchange` / `sharded_conv3d` do the exchange explicitly).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from ._params import ConvConfig

ACT, FILT, BIAS = "act", "w", "b"  # (N, C, D, H, W) activation, (O, C/g, k...) filter, (O,) bias
X, Y = "x", "y"  # the two activation spaces: a convolution's input and its output

# Each operation is identified by its operand and result roles; this says which space each activation lives in.
_SPACES = {
    ((ACT, FILT, BIAS), ACT): ((X, None, None), Y),  # forward
    ((ACT, FILT), ACT): ((Y, None), X),  # grad-input
    ((ACT, ACT), FILT): ((X, Y), None),  # grad-weight
    ((ACT,), BIAS): ((Y,), None),  # grad-bias
    ((ACT, FILT, ACT), (ACT, FILT)): ((X, None, Y), (X, None)),  # grad-input and grad-weight together
}
_BIAS_GRAD = _SPACES[((ACT,), BIAS)]


@dataclasses.dataclass(frozen=True)
class Halo:
    """The halo exchange of one spatial axis: `lo` rows from the left neighbour, `hi` from the right one (a
    negative `hi`: the last -hi rows of the slab are not read), over mesh axes `axes` of `size` devices, each
    holding a slab of `n` rows."""

    dim: int  # array dimension (2, 3 or 4)
    axes: tuple[str, ...]
    size: int
    n: int
    lo: int
    hi: int

    @property
    def window(self) -> int:
        return self.lo + self.n + self.hi


def _axes(spec_entry) -> tuple[str, ...]:
    return (spec_entry,) if isinstance(spec_entry, str) else tuple(spec_entry or ())


def _mesh_size(mesh, axes) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def halo_plan(cfg: ConvConfig, axis: int, axes: tuple[str, ...], size: int) -> Halo | None:
    """The halo exchange that lets a convolution sharded along spatial `axis` (0..2) over `size` devices run
    slab by slab with its output sharded the same way, or None where no such slab decomposition exists."""
    length, out, s = cfg.in_spatial[axis], cfg.out_spatial[axis], cfg.stride[axis]
    span = cfg.dilation[axis] * (cfg.kernel[axis] - 1) + 1
    if length % size or out * s != length:
        return None
    n = length // size
    lo, hi = cfg.pad_lo[axis], span - s - cfg.pad_lo[axis]
    if n % s or lo > n or hi > n or n + min(hi, 0) < 0:
        return None
    return Halo(dim=2 + axis, axes=axes, size=size, n=n, lo=lo, hi=hi)


def _slice(a, dim: int, start: int, stop: int):
    return jax.lax.slice_in_dim(a, start, stop, axis=dim)


def _shift(a, h: Halo, up: bool):
    """Send every device's `a` to its neighbour along h.axes (to the next when `up`); the end receives zeros."""
    pairs = [(j, j + 1) if up else (j + 1, j) for j in range(h.size - 1)]
    return jax.lax.ppermute(a, h.axes, pairs)


def _pad_to(a, dim: int, before: int, after: int):
    widths = [(0, 0)] * a.ndim
    widths[dim] = (before, after)
    return jnp.pad(a, widths)


def halo_rows(x, h: Halo):
    """The halo x's device receives: (lo rows, the left neighbour's last; hi rows, the right one's first), None
    where there is none. The first device's left halo and the last one's right halo are zeros: the convolution's
    own padding."""
    lo = _shift(_slice(x, h.dim, h.n - h.lo, h.n), h, up=True) if h.lo else None
    hi = _shift(_slice(x, h.dim, 0, h.hi), h, up=False) if h.hi > 0 else None
    return lo, hi


def return_halo_rows(own, lo, hi, h: Halo):
    """The transpose of `halo_rows`: the gradients of the received halo rows (lo, hi; None where there is none) go
    back to their owners, which add them to their own rows in place (in a fixed order: deterministic)."""
    if lo is not None:  # my left halo belongs to the left neighbour's last rows
        own = _add_rows(own, _shift(lo, h, up=False), h.n - h.lo, h.dim)
    if hi is not None:  # my right halo belongs to the right neighbour's first rows
        own = _add_rows(own, _shift(hi, h, up=True), 0, h.dim)
    return own


def exchange(x, h: Halo):
    """x's slab extended by its halo: (lo rows of the left neighbour, the slab, hi rows of the right one)."""
    lo, hi = halo_rows(x, h)
    parts = [p for p in (lo, x if h.hi >= 0 else _slice(x, h.dim, 0, h.n + h.hi), hi) if p is not None]
    return jnp.concatenate(parts, h.dim) if len(parts) > 1 else parts[0]


def exchange_transpose(g, h: Halo):
    """The transpose of `exchange`: g covers the extended slab; its halo parts go back to their owners."""
    own = _slice(g, h.dim, h.lo, h.lo + h.n + min(h.hi, 0))
    if h.hi < 0:
        own = _pad_to(own, h.dim, 0, -h.hi)
    lo = _slice(g, h.dim, 0, h.lo) if h.lo else None
    hi = _slice(g, h.dim, h.window - h.hi, h.window) if h.hi > 0 else None
    return return_halo_rows(own, lo, hi, h)


def _add_rows(own, rows, start: int, dim: int):
    """own with `rows` added to its rows start, start + 1, ... along dim (in place)."""
    added = _slice(own, dim, start, start + rows.shape[dim]) + rows
    return jax.lax.dynamic_update_slice_in_dim(own, added, start, dim)


# ---- one sharded axis without the extended slab: the slab's own call plus thin calls for the halo rows' terms


@dataclasses.dataclass(frozen=True)
class Split:
    """A convolution over a slab extended by one halo, as the slab's own call (the halos as zero padding) plus a
    thin call per halo: its rows then zeros (lo) or zeros then its rows (hi), for the output rows they reach. Each
    term of the extended slab's sums reads one row, of the slab or of one halo, so the three calls' results add up
    to it: the slab with its halo (1 x 32 x 66 x 256 x 256 bf16 for D over 4) is never built, nor its gradient
    sliced."""

    own: ConvConfig
    lo: ConvConfig | None  # input rows: the lo halo, then lo_zeros zeros; output rows 0 .. lo_rows
    lo_zeros: int
    lo_rows: int
    hi: ConvConfig | None  # input rows: hi_zeros zeros, then the hi halo; output rows hi_first .. the slab's end
    hi_zeros: int
    hi_first: int


def split_plan(window: ConvConfig, h: Halo) -> Split | None:
    """The Split of `window` (local_config's problem on the extended slab), or None where the halos are not all
    read (padding past the filter's span) or the slab is cropped (negative hi): those keep the extended slab."""
    a = h.dim - 2
    s, span = window.stride[a], window.dilation[a] * (window.kernel[a] - 1) + 1
    if h.hi < 0 or h.lo >= span or h.hi >= span or not (h.lo or h.hi):
        return None
    out = h.n // s

    def along(length: int, rows: int, lo: int, hi: int) -> ConvConfig:
        put = lambda t, v: tuple(v if i == a else e for i, e in enumerate(t))  # noqa: E731
        return window.replace(in_spatial=put(window.in_spatial, length), out_spatial=put(window.out_spatial, rows),
                              pad_lo=put(window.pad_lo, lo), pad_hi=put(window.pad_hi, hi))

    lo_cfg, lo_zeros, lo_rows = None, 0, 0
    if h.lo:  # output rows r with r s < lo read the lo halo
        lo_rows = -(-h.lo // s)
        length = (lo_rows - 1) * s + span
        lo_cfg, lo_zeros = along(length, lo_rows, 0, 0), length - h.lo
    hi_cfg, hi_zeros, hi_first = None, 0, out
    if h.hi:  # output rows r with r s + span - 1 >= lo + n read the hi halo
        hi_first = max(0, -(-(h.lo + h.n - span + 1) // s))
        length = h.window - hi_first * s
        hi_cfg, hi_zeros = along(length, out - hi_first, 0, 0), length - h.hi
    return Split(along(h.n, out, h.lo, h.hi), lo_cfg, lo_zeros, lo_rows, hi_cfg, hi_zeros, hi_first)


def split_call(call: Callable, arrays, roles, spaces, out_role: str, space_out: str, sp: Split, h: Halo):
    """call on the slab's own rows plus the thin calls of `sp`, combined: grad-input sends the halo rows'
    gradients to their owners (exchange_transpose's job); forward and grad-weight add the halo rows' terms."""
    d, out = h.dim, h.n // (sp.own.stride[h.dim - 2])

    def thin(cfg, y_rows, x_part):
        parts = []
        for arr, role, space in zip(arrays, roles, spaces):
            if role == BIAS:
                parts.append(jnp.zeros((0,), arr.dtype))  # the bias belongs to the slab's own call
            elif role == ACT:
                parts.append(x_part if space == X else _slice(arr, d, *y_rows))
            else:
                parts.append(arr)
        return call(*parts, cfg)

    own = call(*arrays, sp.own)
    if space_out == X:  # the thin calls' first (lo) / last (hi) rows are the halo rows' gradients
        lo = _slice(thin(sp.lo, (0, sp.lo_rows), None), d, 0, h.lo) if sp.lo is not None else None
        hi = None
        if sp.hi is not None:
            g = thin(sp.hi, (sp.hi_first, out), None)
            hi = _slice(g, d, g.shape[d] - h.hi, g.shape[d])
        return return_halo_rows(own, lo, hi, h)
    x = next(arr for arr, role, space in zip(arrays, roles, spaces) if role == ACT and space == X)
    lo, hi = halo_rows(x, h)
    if sp.lo is not None:
        part = thin(sp.lo, (0, sp.lo_rows), _pad_to(lo, d, 0, sp.lo_zeros))
        own = _add_rows(own, part, 0, d) if out_role == ACT else own + part
    if sp.hi is not None:
        part = thin(sp.hi, (sp.hi_first, out), _pad_to(hi, d, sp.hi_zeros, 0))
        own = _add_rows(own, part, sp.hi_first, d) if out_role == ACT else own + part
    return own


def local_config(cfg: ConvConfig, halos: Sequence[Halo], batch: int) -> ConvConfig:
    """The problem every device solves on its extended slab (no padding along the exchanged axes)."""
    ins, outs, lo, hi = (list(v) for v in (cfg.in_spatial, cfg.out_spatial, cfg.pad_lo, cfg.pad_hi))
    for h in halos:
        a = h.dim - 2
        ins[a], outs[a], lo[a], hi[a] = h.window, h.n // cfg.stride[a], 0, 0
    return cfg.replace(batch=batch, in_spatial=tuple(ins), out_spatial=tuple(outs), pad_lo=tuple(lo),
                       pad_hi=tuple(hi))


# ---- the partitioning rules


def _found(arg_shapes, in_roles):
    """(mesh, batch mesh axes, per spatial axis the mesh axes) read from the activation operands' shardings: the
    first activation that shards a dimension decides it."""
    mesh, batch, spatial = None, (), [(), (), ()]
    for shape, role in zip(arg_shapes, in_roles):
        sharding = shape.sharding
        if role != ACT or not isinstance(sharding, NamedSharding):
            continue
        mesh = mesh or sharding.mesh
        spec = tuple(sharding.spec) + (None,) * (5 - len(sharding.spec))
        batch = batch or _axes(spec[0])
        for a in range(3):
            spatial[a] = spatial[a] or _axes(spec[2 + a])
    return mesh, batch, spatial


def _plan(cfg, op_spaces, mesh, batch, spatial):
    """The Halo of each spatial axis the partition keeps sharded (for grad-bias, a plain split: it only sums); an
    axis without a plan, or whose mesh axes the batch already uses, is left out (gathered)."""
    used, halos = set(batch), []
    for a, axes in enumerate(spatial):
        if not axes or used & set(axes):
            continue
        size = _mesh_size(mesh, axes)
        if op_spaces == _BIAS_GRAD:  # grad-bias: a sum over every position; any even split works
            length = cfg.out_spatial[a]
            h = Halo(dim=2 + a, axes=axes, size=size, n=length // size, lo=0, hi=0) if length % size == 0 else None
        else:
            h = halo_plan(cfg, a, axes, size)
        if h is not None:
            used |= set(axes)
            halos.append(h)
    return halos


def _spec(batch, halos, ndim: int) -> PartitionSpec:
    entries = [None] * ndim
    if batch:
        entries[0] = batch if len(batch) > 1 else batch[0]
    for h in halos:
        entries[h.dim] = h.axes if len(h.axes) > 1 else h.axes[0]
    return PartitionSpec(*entries)


def _sharding_rule(in_roles, out_role, op_spaces):
    """Shardy rule (a callable of the config): batch factor `n` through activations; a spatial axis whose halo plan
    can exist (L_out * stride == L) is one factor `s<a>` of both spaces (compound with a replicated stride factor
    on the input space when stride > 1), so its sharding propagates from input to output; other spatial axes and
    every channel / filter factor stay replicated."""

    def rule(cfg: ConvConfig, mesh, value_types, result_types):
        fresh = iter(f"f{i}" for i in range(64))
        replicated, sizes = [], {}

        def new():
            replicated.append(next(fresh))
            return replicated[-1]

        spatial = {X: [], Y: []}
        for a in range(3):
            s = cfg.stride[a]
            if op_spaces == _BIAS_GRAD:
                spatial[Y].append(f"s{a}")
            elif cfg.out_spatial[a] * s == cfg.in_spatial[a]:
                spatial[Y].append(f"s{a}")
                if s > 1:
                    replicated.append(f"r{a}")
                    sizes[f"r{a}"] = s
                    spatial[X].append(f"(s{a} r{a})")
                else:
                    spatial[X].append(f"s{a}")
            else:
                spatial[X].append(new())
                spatial[Y].append(new())

        def dims(role, space):
            if role == ACT:
                return " ".join(["n", new(), *spatial[space]])
            return " ".join(new() for _ in range({FILT: 5, BIAS: 1}[role]))

        spaces_in, space_out = op_spaces
        operands = [dims(role, space) for role, space in zip(in_roles, spaces_in)]
        results = [dims(r, s) for r, s in zip(*_results(out_role, space_out))]
        text = f"{', '.join(operands)} -> {', '.join(results)}"
        order = [t for t in text.replace("(", " ").replace(")", " ").replace(",", " ").split() if t != "->"]
        # Shardy wants special factors listed in the order the factors first appear.
        ordered = tuple(sorted(set(replicated), key=order.index))
        return text, dict(need_replication_factors=ordered, **sizes)

    return rule


def _results(out_role, space_out) -> tuple[tuple, tuple]:
    """(roles, spaces) of an operation's results: one each, or the tuples of an operation with several."""
    return (out_role, space_out) if isinstance(out_role, tuple) else ((out_role,), (space_out,))


def _local_result(call: Callable, in_roles, out_role: str, halos, arrays, local: ConvConfig):
    """One single-result operation's result on this device's slab: the split plan's calls, or the call on the
    exchanged slab with its result's halo parts sent back (grad-input)."""
    spaces_in, space_out = _SPACES[(tuple(in_roles), out_role)]
    sp = split_plan(local, halos[0]) if len(halos) == 1 and (X in spaces_in or space_out == X) else None
    if sp is not None:
        return split_call(call, arrays, in_roles, spaces_in, out_role, space_out, sp, halos[0])
    arrays = list(arrays)
    for i, space in enumerate(spaces_in):
        if space == X:
            for h in halos:
                arrays[i] = exchange(arrays[i], h)
    out = call(*arrays, local)
    if space_out == X:
        for h in reversed(halos):
            out = exchange_transpose(out, h)
    return out


def batch_partitioned(call: Callable, in_roles: Sequence[str], out_role, parts: Sequence = ()) -> Callable:
    """Wrap `call(*arrays, cfg)` so activations sharded along the batch and/or spatial axes stay sharded under
    jit (the name predates spatial sharding).

    An operation with several results (`out_role` a tuple of roles) names in `parts`, per result, the
    single-result operation that computes it alone, as (call, indices of its operands among ours, their roles): a
    device whose slab needs halos computes each result by that operation's plan (the halo exchange, split calls
    and returned halo rows are per operation); without halos the call itself runs on the local slice."""
    n_args = len(in_roles)
    op_spaces = _SPACES[(tuple(in_roles), out_role)]
    out_roles, _ = _results(out_role, op_spaces[1])
    several = isinstance(out_role, tuple)

    @functools.partial(custom_partitioning, static_argnums=(n_args,))
    def op(*args):
        return call(*args)

    def shardings(cfg, mesh, arg_shapes, result_shape):
        found_mesh, batch, spatial = _found(arg_shapes, in_roles)
        mesh = found_mesh or mesh
        halos = _plan(cfg, op_spaces, mesh, batch, spatial) if found_mesh is not None else []
        args = tuple(
            NamedSharding(mesh, _spec(batch, halos, 5) if role == ACT else PartitionSpec())
            for s, role in zip(arg_shapes, in_roles)
        )
        outs = tuple(NamedSharding(mesh, _spec(batch, halos, 5) if r == ACT else PartitionSpec()) for r in out_roles)
        return mesh, batch, halos, args, outs if several else outs[0]

    def partition(cfg: ConvConfig, mesh, arg_shapes, result_shape):
        mesh, batch, halos, arg_shardings, out_sharding = shardings(cfg, mesh, arg_shapes, result_shape)
        reduce_axes = tuple(batch) + tuple(a for h in halos for a in h.axes)

        def lower(*arrays):
            local = local_config(cfg, halos, next(a.shape[0] for a, r in zip(arrays, in_roles) if r == ACT))
            if not several:
                outs = (_local_result(call, in_roles, out_role, halos, arrays, local),)
            elif halos:
                outs = tuple(_local_result(c, roles, r, halos, [arrays[i] for i in idx], local)
                             for (c, idx, roles), r in zip(parts, out_roles))
            else:
                outs = call(*arrays, local)
            outs = tuple(jax.lax.psum(o, reduce_axes) if r != ACT and reduce_axes else o
                         for o, r in zip(outs, out_roles))
            return outs if several else outs[0]

        return mesh, lower, out_sharding, arg_shardings

    def infer(cfg, mesh, arg_shapes, result_shape):
        return shardings(cfg, mesh, arg_shapes, result_shape)[-1]

    try:
        op.def_partition(
            partition=partition,
            infer_sharding_from_operands=infer,
            propagate_user_sharding=None,
            sharding_rule=_sharding_rule(in_roles, out_role, op_spaces),
        )
    except TypeError:  # custom_partitioning is experimental: on an API it does not know, gather (still correct)
        return call
    return op
