"""The torch front: gradcheck, memory layouts, the nn.Conv3d drop-in contract, module swap and training."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jaxconv3d.torch as jt
from helpers import DEVICES, assert_close, train_side_by_side

KW = dict(stride=(2, 1, 1), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2)


def test_gradcheck_float64():
    x = torch.randn(2, 4, 5, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: jt.conv3d(x_, w_, b_, **KW), (x, w, b))


def test_gradgradcheck_float64():
    x = torch.randn(1, 2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fn = lambda x_, w_, b_: jt.conv3d(x_, w_, b_, stride=(2, 1, 1), padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.gpu
def test_channels_last_output_from_an_ncdhw_kernel():
    """float64 on a GPU runs the sm80 family, which works in NCDHW: a channels_last_3d input still gets a
    channels_last_3d output (F.conv3d's rule), converted after the kernel. (On the CPU the kernels take the caller's
    layout, so only a GPU shows a missing conversion.)"""
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    from jaxconv3d import _plan, conv_config

    cl = torch.channels_last_3d
    x = torch.randn(2, 4, 6, 7, 8, device="cuda", dtype=torch.float64).contiguous(memory_format=cl)
    w = torch.randn(6, 2, 3, 3, 3, device="cuda", dtype=torch.float64).contiguous(memory_format=cl)
    cfg = conv_config(tuple(x.shape), tuple(w.shape), None, **KW)
    plan = _plan.plan(cfg, "float64", _plan.cc_of(x.device), "forward", 1)
    assert (plan["family"], plan["layout"]) == ("sm80", "NCDHW")
    y = jt.conv3d(x, w, None, **KW)
    assert y.is_contiguous(memory_format=cl) and not y.is_contiguous()
    assert_close(y, F.conv3d(x, w, None, **KW), 1e-12, "float64 channels_last_3d")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last_3d", "transposed_view", "strided_slice"])
def test_non_contiguous_inputs(device, layout):
    x = torch.randn(2, 4, 6, 7, 8, device=device)
    w = torch.randn(6, 2, 3, 3, 3, device=device)
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
        w = w.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "transposed_view":
        x = x.transpose(3, 4).contiguous().transpose(3, 4)
    else:
        x = torch.randn(2, 4, 12, 7, 8, device=device)[:, :, ::2]
    assert not x.is_contiguous()
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = jt.conv3d(x, w, None, **KW)
    y_ref = F.conv3d(x.double(), w.double(), None, **KW)
    assert_close(y, y_ref, 1e-5, layout)
    if layout == "channels_last_3d":  # the memory format propagates as it does through F.conv3d
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w), g)
    want = torch.autograd.grad(y_ref, (x, w), g.double())
    for a, r in zip(got, want):
        assert_close(a, r, 1e-5, layout)


class _CountingAdapter:
    """Stands in for the C++ adapter of the torch door and counts its calls by entry point."""

    def __init__(self, real):
        self.real, self.calls = real, {}

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)

        return call


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory", [torch.contiguous_format, torch.channels_last_3d])
def test_first_order_backward_is_one_crossing(device, memory, monkeypatch):
    """A training step's backward runs grad-input, grad-weight and grad-bias in one adapter call, for every subset of
    operands that require grad, bitwise equal to the three operations run on their own (dx in dy's memory format,
    dw in w's)."""
    from jaxconv3d._params import conv_config
    from jaxconv3d.torch import _ops

    x = torch.randn(2, 4, 6, 7, 8, device=device).contiguous(memory_format=memory)
    w = torch.randn(6, 2, 3, 3, 3, device=device).contiguous(memory_format=memory)
    b = torch.randn(6, device=device)
    cfg = conv_config(x.shape, w.shape, b.shape, **KW)
    for need in [(True, True, True), (True, False, False), (True, False, True), (False, True, True),
                 (False, True, False), (False, False, True)]:
        leaves = [t.detach().requires_grad_(r) for t, r in zip((x, w, b), need)]
        y = jt.conv3d(*leaves, **KW)
        g = torch.randn_like(y)
        counting = _CountingAdapter(_ops._adapter)
        monkeypatch.setattr(_ops, "_adapter", counting)
        y.backward(g)
        monkeypatch.undo()
        # one convolution crossing; layout conversions (a channels-last caller on an NCDHW kernel) are not crossings
        convs = {k: v for k, v in counting.calls.items() if k != "convert_layout"}
        assert convs == {"bwd": 1}, (need, counting.calls)
        want = (_ops.dgrad(g, w, cfg), _ops.wgrad(x, g, cfg, memory == torch.channels_last_3d), _ops.bgrad(g))
        for leaf, r, ref in zip(leaves, need, want):
            assert (leaf.grad is not None) == r
            if r:
                assert torch.equal(leaf.grad, ref) and leaf.grad.stride() == ref.stride()


def test_backward_checks_every_operation_before_launching_any():
    """The one-crossing backward refuses a bad grad-bias before grad-input and grad-weight have written anything."""
    from torch.utils.dlpack import to_dlpack

    from jaxconv3d import _ext

    x, w, dy = torch.randn(1, 2, 5, 5, 5), torch.randn(3, 2, 3, 3, 3), torch.randn(1, 3, 3, 3, 3)
    dx, dw = torch.full_like(x, float("nan")), torch.full_like(w, float("nan"))
    wrong_db = torch.empty(4)
    attrs = ((1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), 1, 0, 0, 0, 0)  # ..., groups, math, layouts, stream
    caps = [to_dlpack(t) for t in (dy, w, dx, x, dy, dw, dy, wrong_db)]
    with pytest.raises(ValueError, match="grad_bias must have shape"):
        _ext.torch_adapter.bwd(*caps, None, *attrs)
    assert dx.isnan().all() and dw.isnan().all()


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (1, 2, 0), "same", "valid"])
def test_module_matches_nn_conv3d(padding_mode, padding):
    torch.manual_seed(0)
    ref = nn.Conv3d(4, 6, (3, 2, 3), padding=padding, padding_mode=padding_mode, groups=2, dilation=(1, 2, 1))
    torch.manual_seed(0)
    ours = jt.Conv3d(4, 6, (3, 2, 3), padding=padding, padding_mode=padding_mode, groups=2, dilation=(1, 2, 1))
    # Same constructor + same seed -> same init; same repr and state_dict keys.
    for (k1, v1), (k2, v2) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert repr(ours) == repr(ref)
    assert isinstance(ours, nn.Conv3d)
    x = torch.randn(2, 4, 6, 7, 8)
    assert_close(ours(x), ref(x).double(), 1e-5)
    assert_close(ours(x[0]), ref(x[0]).double(), 1e-5)  # unbatched


def test_module_precision_keyword_and_pickle():
    m = jt.Conv3d(3, 4, 3, precision="tf32")
    assert "precision='tf32'" in repr(m)
    clone = pickle.loads(pickle.dumps(m))
    assert clone.precision == "tf32"
    x = torch.randn(1, 3, 5, 5, 5)
    assert torch.equal(clone(x), m(x))
    m2 = jt.Conv3d(3, 4, 3)
    m2.load_state_dict(nn.Conv3d(3, 4, 3).state_dict())


class Small3dCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv3d(8, 8, 3, stride=2, padding=1, groups=2),
            nn.ReLU(),
            nn.Conv3d(8, 8, 3, padding=1, groups=8, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv3d(8, 4, 1),
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(self.stem(x))
        return self.head(h.mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("device", DEVICES)
def test_module_swap_and_training(device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the reference model must be float32-accurate
    torch.manual_seed(0)
    ref = Small3dCnn().to(device)
    model = copy.deepcopy(ref)
    params_before = [id(p) for p in model.parameters()]
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = jt.convert_conv3d(model)
    assert swapped is model
    assert [id(p) for p in swapped.parameters()] == params_before  # same Parameter objects
    assert sum(isinstance(m, jt.Conv3d) for m in swapped.modules()) == 4
    assert swapped.state_dict().keys() == state_before.keys()
    x = torch.randn(2, 3, 8, 8, 8, device=device)
    target = torch.randn(2, 2, device=device)
    assert_close(swapped(x), ref(x).double(), 1e-5)
    train_side_by_side(ref, swapped, x, target, steps=4, lr=0.1)


def test_convert_filter_and_root():
    model = Small3dCnn()
    jt.convert_conv3d(model, filter_fn=lambda m, name: name.startswith("body"))
    assert not isinstance(model.stem, jt.Conv3d)
    assert isinstance(model.body[1], jt.Conv3d)
    root = nn.Conv3d(2, 2, 3)
    new_root = jt.convert_conv3d(root, precision="tf32")
    assert isinstance(new_root, jt.Conv3d) and new_root.weight is root.weight and new_root.precision == "tf32"


@pytest.mark.parametrize(
    "device,dtype", [("cpu", torch.bfloat16), pytest.param("cuda", torch.float16, marks=pytest.mark.gpu),
                     pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu)]
)
def test_autocast(device, dtype):
    m = jt.Conv3d(3, 4, 3, padding=1).to(device)
    x = torch.randn(2, 3, 6, 6, 6, device=device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        y = m(x)
        assert y.dtype == dtype
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and m.weight.grad.dtype == torch.float32
    ref = F.conv3d(x.to(dtype).double(), m.weight.to(dtype).double(), m.bias.to(dtype).double(), padding=1)
    assert_close(y, ref, 2e-2)


def test_tf32_flags_do_not_lower_accuracy():
    """torch's global TF32 switches leave the default precision float32-accurate."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        x, w = torch.randn(2, 8, 8, 8, 8, device=dev), torch.randn(8, 8, 3, 3, 3, device=dev)
        assert_close(jt.conv3d(x, w), F.conv3d(x.double(), w.double()), 1e-5)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_torch_compile_full_graph():
    """torch.compile keeps the convolution as one custom op: no graph break (fullgraph=True), same results and
    gradients as eager, double backward included."""
    torch.manual_seed(0)
    model = nn.Sequential(jt.Conv3d(3, 4, 3, padding=1, groups=1), nn.Tanh(), jt.Conv3d(4, 2, (1, 3, 2), stride=2))
    x = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    eager = model(x)
    (gx_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.equal(y, eager) and torch.equal(gx, gx_eager)


def test_custom_ops_pass_opcheck():
    from jaxconv3d.torch import _library

    x = torch.randn(1, 4, 5, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    attrs = ([1, 2, 1], [1, 0, 1], [0, 1, 1], [1, 1, 2], 2, 0)
    torch.library.opcheck(_library.conv3d, (x, w, b, *attrs))
    y = _library.conv3d(x, w, b, *attrs)
    dy = torch.randn_like(y)
    torch.library.opcheck(_library.input_grad, (dy, w, list(x.shape), *attrs))
    torch.library.opcheck(_library.weight_grad, (x, dy, list(w.shape), *attrs))
    torch.library.opcheck(_library.bias_grad, (dy,))


@pytest.mark.parametrize("ours, theirs", [("Conv3d", "Conv3d"), ("ConvTranspose3d", "ConvTranspose3d")])
def test_layer_constructors_spell_out_torchs_parameters(ours, theirs):
    """Our layers' constructors list nn's parameters in nn's order and defaults (IDEs and keyword checks see them),
    plus the keyword-only `precision`."""
    import inspect

    mine = inspect.signature(getattr(jt, ours).__init__).parameters
    torchs = inspect.signature(getattr(torch.nn, theirs).__init__).parameters
    assert list(mine)[:-1] == list(torchs) and list(mine)[-1] == "precision"
    assert mine["precision"].kind is inspect.Parameter.KEYWORD_ONLY and mine["precision"].default is None
    for name, p in torchs.items():
        assert mine[name].default == p.default, name
