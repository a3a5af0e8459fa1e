"""The fused backwards: grad-input and grad-weight of an NCDHW depthwise 3x3x3 layer whose x and dy have the same
extents, in one pass over dy. 16-bit: `depthwise_3x3x3_backward_mma` (cuda/sm80/dw3_bwd_mma.cu); float32 with a
channel multiplier of 1: `depthwise_3x3x3_backward_stream` (cuda/sm80/dw3_bwd_stream.cu).

Their results are bitwise those of the two kernels each fuses (`stencil_3x3x3_mma` and `wgrad_depthwise_3x3x3_mma`;
`stencil_3x3x3_stream` and `wgrad_depthwise_3x3x3_stream`, which is the float32 kernel without its grad-input): each
sums in their order. So a front may fuse or not (the JAX front fuses where both x and w are differentiated, the
torch front in a first-order backward that needs both) and the fronts still agree bit for bit.

Anywhere: which problems the rule gives it (explain's "grads" entry), and the JAX plumbing of the `grads`
operation (its FFI call, batching, zero batch, differentiation, partitioning) with the fused path forced on the
CPU, whose handler runs grad-input then grad-weight. On a GPU: the kernel through both doors into NaN-poisoned
outputs with a garbage-filled workspace, against float64 and bitwise against the separate kernels (aligned and one
element off alignment), deterministic, and the JAX front's program naming the fused call.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.utils.dlpack import to_dlpack

import jaxconv3d
from helpers import BOUNDS, TORCH_DTYPES, assert_close, jax_has_gpu, randn, run_on_four_cpu_devices
from jaxconv3d import _autodiff, _ext, _ffi, _plan, conv_config
from jaxconv3d.reference import reference_and_grads

FUSED = "depthwise_3x3x3_backward_mma"
FUSED32 = "depthwise_3x3x3_backward_stream"
PAIRS = {FUSED: ("stencil_3x3x3_mma", "wgrad_depthwise_3x3x3_mma"),
         FUSED32: ("stencil_3x3x3_stream", "wgrad_depthwise_3x3x3_stream")}


def fused_tile(dtype: str) -> str:
    return FUSED32 if dtype == "float32" else FUSED
SUITE = ((8, 192, 16, 28, 28), (192, 1, 3, 3, 3), dict(padding=1, groups=192))


def grads_plan(x_shape, w_shape, kw, dtype="bfloat16", cc=90, layout="NCDHW"):
    return jaxconv3d.explain(x_shape, w_shape, dtype=dtype, cc=cc, layout=layout, **kw)


def test_rule_takes_the_suite_layer():
    for cc in (80, 90):
        for dtype, precision in (("bfloat16", None), ("float16", None), ("float32", None), ("float32", "tf32")):
            a = jaxconv3d.explain(*SUITE[:2], dtype=dtype, cc=cc, precision=precision, **SUITE[2])
            tile = fused_tile(dtype)
            assert (a["grads"]["family"], a["grads"]["tile"], a["grads"]["layout"]) == ("sm80", tile, "NCDHW")
            assert a["grads"]["workspace_bytes"] == a["grad_weight"]["workspace_bytes"] > 0
            assert (a["grad_input"]["tile"], a["grad_weight"]["tile"]) == PAIRS[tile]


@pytest.mark.parametrize("x_shape,w_shape,kw,dtype,cc,layout,why", [
    (*SUITE, "float64", 90, "NCDHW", "float64"),
    (*SUITE, "bfloat16", 0, "NCDHW", "the CPU"),
    (*SUITE, "float32", 0, "NCDHW", "the CPU"),
    ((8, 28, 16, 28, 192), (3, 3, 3, 1, 192), dict(padding=1, groups=192), "float32", 90, "NDHWC", "channels-last"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=(0, 1, 1), groups=4), "float32", 90, "NCDHW", "fewer dy planes"),
    ((2, 4, 9, 17, 64), (8, 1, 3, 3, 3), dict(padding=1, groups=4), "float32", 90, "NCDHW", "multiplier 2"),
    ((8, 28, 16, 28, 192), (3, 3, 3, 1, 192), dict(padding=1, groups=192), "bfloat16", 90, "NDHWC", "channels-last"),
    # both kernels it fuses would run (rows of 4k elements), but x and dy differ in D or H: their grad-weight splits
    # walk dy's planes and rows, the fused kernel x's
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=(0, 1, 1), groups=4), "bfloat16", 90, "NCDHW", "fewer dy planes"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=(2, 1, 1), groups=4), "bfloat16", 90, "NCDHW", "more dy planes"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=((1, 1), (0, 1), (1, 1)), groups=4), "bfloat16", 90, "NCDHW",
     "one dy row fewer"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=0, groups=4), "bfloat16", 90, "NCDHW", "dy smaller (W 62)"),
    ((2, 4, 9, 17, 30), (4, 1, 3, 3, 3), dict(padding=1, groups=4), "bfloat16", 90, "NCDHW", "W not 4k"),
    ((2, 4, 9, 17, 64), (8, 1, 3, 3, 3), dict(padding=1, groups=4), "bfloat16", 90, "NCDHW", "multiplier 2"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=2, dilation=2, groups=4), "bfloat16", 90, "NCDHW", "dilated"),
    ((2, 4, 9, 17, 64), (4, 1, 3, 3, 5), dict(padding=(1, 1, 2), groups=4), "bfloat16", 90, "NCDHW", "3x3x5"),
])
def test_rule_leaves_the_rest_apart(x_shape, w_shape, kw, dtype, cc, layout, why):
    answer = grads_plan(x_shape, w_shape, kw, dtype=dtype, cc=cc, layout=layout)
    a = answer["grads"]
    assert (a["family"], a["tile"], a["workspace_bytes"]) == ("", "", 0), why
    assert "two operations" in a["rule"]
    if "dy" in why and "W" not in why and dtype != "float32":  # the pair the fused kernel would replace runs apart
        assert (answer["grad_input"]["tile"], answer["grad_weight"]["tile"]) == PAIRS[FUSED]
    if "dy" in why and dtype == "float32":  # grad-weight keeps the brick kernel: dy's strips are not dx's
        assert (answer["grad_input"]["tile"], answer["grad_weight"]["tile"]) == ("stencil_3x3x3_stream",
                                                                                 "wgrad_depthwise_3x3x3_regs")


def test_asymmetric_same_extents_fuse():
    """Padding (0, 2) or (2, 0) keeps x's extents: fused too."""
    for dtype in ("bfloat16", "float32"):
        a = grads_plan((1, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=((0, 2), (2, 0), (1, 1)), groups=4), dtype)
        assert a["grads"]["tile"] == fused_tile(dtype)


# ---- the JAX operation, with the fused call forced on the CPU (its handler: grad-input, then grad-weight)

KW = dict(padding=1, groups=3)
X, W = (2, 3, 5, 6, 8), (3, 1, 3, 3, 3)


def _data(rng, dtype="float32"):
    return randn(rng, X, dtype), randn(rng, W, dtype), randn(rng, (3,), dtype)


def _loss(x, w, b):
    return jnp.sum(jnp.sin(jaxconv3d.conv3d(x, w, b, **KW)))


@pytest.fixture
def forced(monkeypatch, cpu_jax):
    """Every `grads` call takes the fused FFI target (on the CPU: the two operations inside one handler)."""
    monkeypatch.setattr(_ffi, "fused_grads", lambda cfg, dtype: True)


@pytest.fixture
def cpu_jax():
    """The forced tests run the CPU handler: where JAX's default device is a GPU, the fused call would reach the
    CUDA door, which refuses problems without a fused kernel."""
    if jax_has_gpu():
        pytest.skip("JAX's default device is a GPU (the forced fused path is a CPU test)")


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def test_cpu_forced_fused_path_matches_the_pair_bitwise(rng, monkeypatch, cpu_jax):
    x, w, b = _data(rng)
    apart = jax.jit(jax.grad(_loss, argnums=(0, 1, 2)))(x, w, b)
    monkeypatch.setattr(_ffi, "fused_grads", lambda cfg, dtype: True)
    text = _hlo(jax.grad(_loss, argnums=(0, 1, 2)), x, w, b)
    assert _ffi.GRADS in text and _ffi.DGRAD not in text and _ffi.WGRAD not in text
    fused = jax.jit(jax.grad(_loss, argnums=(0, 1, 2)))(x, w, b)
    for got, want in zip(fused, apart):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_one_operand_differentiated_runs_its_operation_alone(rng, forced):
    """grad with respect to w only (x a constant: a first layer) runs grad-weight alone, never grad-input; and the
    reverse."""
    x, w, b = _data(rng)
    only_w = _hlo(jax.grad(_loss, argnums=1), x, w, b)
    assert _ffi.WGRAD in only_w and _ffi.GRADS not in only_w and _ffi.DGRAD not in only_w
    only_x = _hlo(jax.grad(_loss, argnums=0), x, w, b)
    assert _ffi.DGRAD in only_x and _ffi.GRADS not in only_x and _ffi.WGRAD not in only_x
    only_b = _hlo(jax.grad(_loss, argnums=2), x, w, b)
    assert _ffi.BGRAD in only_b and not {_ffi.GRADS, _ffi.DGRAD, _ffi.WGRAD} & set(only_b.split('"'))


def test_output_outside_the_loss_gives_zero_gradients(rng, forced):
    """A convolution whose result is only an auxiliary output gets a symbolic-zero cotangent: no gradients flow."""
    x, w, b = _data(rng)
    (gx, gw, gb), y = jax.grad(lambda x, w, b: (jnp.sum(x**2), jaxconv3d.conv3d(x, w, b, **KW)), argnums=(0, 1, 2),
                               has_aux=True)(x, w, b)
    np.testing.assert_allclose(np.asarray(gx), 2 * np.asarray(x), rtol=1e-6)
    assert not np.any(np.asarray(gw)) and not np.any(np.asarray(gb)) and y.shape == (2, 3, 5, 6, 8)


def test_forced_fused_path_under_vmap_grad_of_grad_and_zero_batch(rng, forced):
    """Per-example gradients fold the vmapped axis into the groups (one call); second order goes through the
    operation's own VJP; an empty batch gives zeros without a call."""
    x, w, b = _data(rng, "float64")
    with jax.enable_x64(True):
        xs = jnp.stack([x, 2 * x])
        per_example = jax.vmap(jax.grad(_loss, argnums=(0, 1)), in_axes=(0, None, None))(xs, w, b)
        text = _hlo(jax.vmap(jax.grad(_loss, argnums=(0, 1)), in_axes=(0, None, None)), xs, w, b)
        assert text.count(_ffi.GRADS) == 1
        for i in range(2):
            one = jax.grad(_loss, argnums=(0, 1))(xs[i], w, b)
            for got, want in zip(per_example, one):
                assert_close(got[i], want, 1e-12)

        def second(x, w, b):
            gx, gw = jax.grad(_loss, argnums=(0, 1))(x, w, b)
            return jnp.sum(gx**2) + jnp.sum(jnp.cos(gw))

        got = jax.grad(second, argnums=(0, 1))(x, w, b)

        def ref_loss(x, w, b):
            y = jax.lax.conv_general_dilated(x, w, (1, 1, 1), [(1, 1)] * 3, feature_group_count=3,
                                             dimension_numbers=("NCDHW", "OIDHW", "NCDHW"), precision="highest")
            return jnp.sum(jnp.sin(y + b[None, :, None, None, None]))

        def ref_second(x, w, b):
            gx, gw = jax.grad(ref_loss, argnums=(0, 1))(x, w, b)
            return jnp.sum(gx**2) + jnp.sum(jnp.cos(gw))

        want = jax.grad(ref_second, argnums=(0, 1))(x, w, b)
        for g, r in zip(got, want):
            assert_close(g, r, 1e-10)
        empty = jnp.zeros((0, *X[1:]))
        gx, gw = jax.grad(lambda x, w: jnp.sum(jaxconv3d.conv3d(x, w, **KW)), argnums=(0, 1))(empty, w)
        assert gx.shape == empty.shape and gw.shape == W and not np.any(np.asarray(gw))


def test_forced_fused_path_sharded(cpu_jax):
    """Under jit over four devices: the batch sharded (each device runs the call on its slice, grad-weight summed
    over the devices) and D sharded with halos (each result by its own operation's halo plan)."""
    run_on_four_cpu_devices(textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jaxconv3d
        from jaxconv3d import _ffi
        kw = dict(padding=1, groups=3)
        loss = lambda x, w: jnp.sum(jnp.sin(jaxconv3d.conv3d(x, w, **kw)))
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((4, 3, 8, 6, 8)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 1, 3, 3, 3)), jnp.float32)
        want = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
        _ffi.fused_grads = lambda cfg, dtype: True
        mesh = Mesh(np.array(jax.devices()), ("d",))
        for spec in (P("d"), P(None, None, "d")):
            xs = jax.device_put(x, NamedSharding(mesh, spec))
            f = jax.jit(jax.grad(loss, argnums=(0, 1)))
            text = f.lower(xs, w).as_text()
            got = f(xs, w)
            assert got[0].sharding.spec[:3] == tuple(spec)[:3] or spec == P("d"), got[0].sharding
            for g, r in zip(got, want):
                np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=2e-5, atol=2e-5)
        print("sharding ok")
    """))


def test_torch_custom_op_for_compile():
    """torch.compile's backward op (`jaxconv3d::conv3d_grads`, what a compiled first-order backward runs where x and w
    both need gradients): its fake rule, autograd rule and strides pass opcheck in both memory formats, and its
    results are the two operations' ops, bit for bit."""
    from jaxconv3d.torch import _library

    attrs = ((1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), 3, 0)
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        x = torch.randn(2, 3, 5, 6, 8).contiguous(memory_format=fmt)
        dy = torch.randn(2, 3, 5, 6, 8).contiguous(memory_format=fmt)
        w = torch.randn(3, 1, 3, 3, 3)
        torch.library.opcheck(_library.grads, (x, w, dy, *attrs))
        dx, dw = _library.grads(x, w, dy, *attrs)
        assert torch.equal(dx, _library.input_grad(dy, w, tuple(x.shape), *attrs))
        assert torch.equal(dw, _library.weight_grad(x, dy, tuple(w.shape), *attrs))
        assert dx.is_contiguous(memory_format=fmt)
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        compiled = torch.compile(lambda a, b: _library.conv3d(a, b, None, *attrs), fullgraph=True, backend="aot_eager")
        gx, gw = torch.autograd.grad(compiled(xr, wr), (xr, wr), dy)
        assert torch.equal(gx, dx) and torch.equal(gw, dw)


# ---- on a GPU


def _cases():
    return [  # (x_shape, w_shape, kw): H blocks of 15 and W blocks of 32 cut, one channel, asymmetric padding
        SUITE,
        ((2, 3, 20, 21, 36), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
        ((3, 5, 17, 33, 68), (5, 1, 3, 3, 3), dict(padding=1, groups=5)),
        ((1, 1, 3, 16, 4), (1, 1, 3, 3, 3), dict(padding=1, groups=1)),
        ((1, 7, 40, 15, 32), (7, 1, 3, 3, 3), dict(padding=1, groups=7)),
        ((2, 3, 8, 30, 36), (3, 1, 3, 3, 3), dict(padding=((0, 2), (2, 0), (1, 1)), groups=3)),
        ((2, 3, 7, 9, 8), (3, 1, 3, 3, 3), dict(padding=((2, 0), (0, 2), (2, 0)), groups=3)),
    ]


def _cases32():
    return [  # float32 only (rows the 16-bit kernel refuses)
        # float32's strips (32 wide, 28 high, or 32 where that covers H with fewer rows, as for H 62; chunks of 16
        # planes): W 33 and H 35 cut a strip, D 35 = 16 + 16 + 3 chunks (padding 0, 1, 2 before: 2, 1, 0 extra x
        # steps), 520 channels = splits of several units, W 30 (4-byte copies)
        ((2, 3, 35, 35, 33), (3, 1, 3, 3, 3), dict(padding=((0, 2), (1, 1), (2, 0)), groups=3)),
        ((6, 520, 17, 5, 7), (520, 1, 3, 3, 3), dict(padding=1, groups=520)),
        ((1, 2, 18, 62, 30), (2, 1, 3, 3, 3), dict(padding=((2, 0), (2, 0), (0, 2)), groups=2)),
    ]


CASES = _cases()
# (case, dtype) with ids "index-dtype": every case in each dtype, then the float32-only ones numbered on
GPU_CASES = {f"{i}-{d}": (c, d) for i, c in enumerate(CASES) for d in ("bfloat16", "float16", "float32")}
GPU_CASES.update({f"{len(CASES) + i}-float32": (c, "float32") for i, c in enumerate(_cases32())})


def _gpu_case(rng, x_shape, w_shape, kw, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    cfg = conv_config(x_shape, w_shape, None, **kw)
    tdt = TORCH_DTYPES[dtype]
    cc = _plan.cc_of(torch.device("cuda"))
    plan = _plan.plan(cfg, tdt, cc, "grads", 0)
    assert plan["tile"] == fused_tile(dtype), plan
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(tdt).double()  # noqa: E731
    attrs = (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, 0)
    return cfg, tdt, plan, rounded(x_shape), rounded(w_shape), rounded(cfg.y_shape), attrs


def _poisoned(shape, tdt, offset=0):
    """A NaN-filled tensor; `offset` elements into a larger buffer (off 8-byte alignment for offset 1)."""
    buf = torch.full((int(np.prod(shape)) + offset,), float("nan"), dtype=tdt, device="cuda")
    return buf[offset:].view(shape)


def _placed(t, tdt, offset=0):
    out = _poisoned(t.shape, tdt, offset)
    out.copy_(t)
    return out


def _fused_and_apart(cfg, tdt, plan, x, w, dy, attrs, offset=0):
    """(dx, dw) from the adapter's backward (fused) and from grad-input and grad-weight calls, each into poisoned
    outputs with a garbage-filled workspace."""
    stream = torch.cuda.current_stream().cuda_stream
    xd, wd, dyd = _placed(x, tdt, offset), _placed(w, tdt), _placed(dy, tdt, offset)
    ws = lambda: torch.full((plan["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")  # noqa: E731
    dx, dw = _poisoned(cfg.x_shape, tdt, offset), _poisoned(cfg.w_shape, tdt)
    cap = to_dlpack(dyd)
    _ext.torch_adapter.bwd(cap, to_dlpack(wd), to_dlpack(dx), to_dlpack(xd), cap, to_dlpack(dw), None, None,
                           to_dlpack(ws()), *attrs, 0, 0, stream)
    dx2, dw2 = _poisoned(cfg.x_shape, tdt, offset), _poisoned(cfg.w_shape, tdt)
    _ext.torch_adapter.dgrad(to_dlpack(dyd), to_dlpack(wd), to_dlpack(dx2), to_dlpack(ws()), *attrs, 0, stream)
    _ext.torch_adapter.wgrad(to_dlpack(xd), to_dlpack(dyd), to_dlpack(dw2), to_dlpack(ws()), *attrs, 0, stream)
    torch.cuda.synchronize()
    return (dx, dw), (dx2, dw2)


def _bits(t):
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int16).cpu()


@pytest.mark.gpu
@pytest.mark.parametrize("case,dtype", GPU_CASES.values(), ids=GPU_CASES.keys())
def test_fused_against_float64_and_bitwise_the_pair(rng, case, dtype):
    x_shape, w_shape, kw = case
    cfg, tdt, plan, x, w, dy, attrs = _gpu_case(rng, x_shape, w_shape, kw, dtype)
    (dx, dw), (dx2, dw2) = _fused_and_apart(cfg, tdt, plan, x, w, dy, attrs)
    ref = reference_and_grads(x, w, None, dy, **kw)
    assert_close(dx, ref[1], BOUNDS[dtype], f"fused grad-input {case} {dtype}")
    assert_close(dw, ref[2], BOUNDS[dtype], f"fused grad-weight {case} {dtype}")
    assert torch.equal(_bits(dx), _bits(dx2)) and torch.equal(_bits(dw), _bits(dw2))
    (dx3, dw3), _ = _fused_and_apart(cfg, tdt, plan, x, w, dy, attrs)  # deterministic
    assert torch.equal(_bits(dx), _bits(dx3)) and torch.equal(_bits(dw), _bits(dw3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_fused_off_alignment_runs_the_pair(rng, dtype):
    """x, dy and dx one element into their buffers: the 16-bit fused door runs the two kernels (each with its own
    alignment fallback), the float32 kernel its 4-byte copies, and each still gives the pair's results."""
    x_shape, w_shape, kw = CASES[1]
    cfg, tdt, plan, x, w, dy, attrs = _gpu_case(rng, x_shape, w_shape, kw, dtype)
    (dx, dw), (dx2, dw2) = _fused_and_apart(cfg, tdt, plan, x, w, dy, attrs, offset=1)
    ref = reference_and_grads(x, w, None, dy, **kw)
    assert_close(dx, ref[1], BOUNDS[dtype], "grad-input off alignment")
    assert_close(dw, ref[2], BOUNDS[dtype], "grad-weight off alignment")
    assert torch.equal(_bits(dx), _bits(dx2)) and torch.equal(_bits(dw), _bits(dw2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_fronts_agree_bitwise_fused_or_not(rng, dtype):
    """The JAX program names the fused call where x and w are differentiated; its gradients equal the torch
    front's (fused first-order backward and the create_graph path's separate operations) and JAX's own
    single-operand gradients (grad-input alone, grad-weight alone), bit for bit."""
    if not jax_has_gpu():
        pytest.skip("needs JAX with a GPU")
    from jaxconv3d.torch import conv3d as torch_conv3d

    x_shape, w_shape, kw = CASES[2]
    _gpu_case(rng, x_shape, w_shape, kw, dtype)
    tdt = TORCH_DTYPES[dtype]
    x, w = randn(rng, x_shape, "float32"), randn(rng, w_shape, "float32")
    cot = randn(rng, conv_config(x_shape, w_shape, None, **kw).y_shape, "float32")
    jx, jw, jc = (jnp.asarray(a, dtype) for a in (x, w, cot))
    f = lambda x, w: jnp.sum(jaxconv3d.conv3d(x, w, **kw).astype(jnp.float32) * jc.astype(jnp.float32))  # noqa
    assert _ffi.GRADS in jax.jit(jax.grad(f, argnums=(0, 1))).lower(jx, jw).as_text()
    gx, gw = jax.jit(jax.grad(f, argnums=(0, 1)))(jx, jw)
    gx_alone = jax.jit(jax.grad(f, argnums=0))(jx, jw)
    gw_alone = jax.jit(jax.grad(f, argnums=1))(jx, jw)
    to_torch = lambda a: torch.from_numpy(np.asarray(a.astype(jnp.float32))).to("cuda", tdt)  # noqa: E731
    tx, tw, tc = (torch.as_tensor(a).to("cuda", tdt) for a in (x, w, cot))
    for create_graph in (False, True):
        xr, wr = tx.clone().requires_grad_(), tw.clone().requires_grad_()
        y = torch_conv3d(xr, wr, **kw)
        dx, dw = torch.autograd.grad(y, (xr, wr), tc, create_graph=create_graph)
        assert torch.equal(_bits(dx.detach()), _bits(to_torch(gx))), create_graph
        assert torch.equal(_bits(dw.detach()), _bits(to_torch(gw))), create_graph
    assert np.array_equal(np.asarray(gx.astype(jnp.float32)), np.asarray(gx_alone.astype(jnp.float32)))
    assert np.array_equal(np.asarray(gw.astype(jnp.float32)), np.asarray(gw_alone.astype(jnp.float32)))
    assert _autodiff.grads is not None
