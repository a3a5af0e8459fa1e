"""The torch front runs on torch alone (issue 9, item 11): with JAX made unimportable in a fresh process, `import
jaxconv3d.torch` works, loads no jax/jaxlib module, and its conv3d / Conv3d / conv_transpose3d (forward and backward)
agree with torch's own in float64; the JAX names of the package raise an ImportError saying what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["jax"] = None      # `import jax` now fails and find_spec("jax") is None, as when it is not installed
    sys.modules["jaxlib"] = None
    import torch
    import torch.nn.functional as F
    import jaxconv3d
    import jaxconv3d.torch as jt

    assert not jaxconv3d.HAVE_JAX
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("jax", "jaxlib"))
    assert not loaded, loaded
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    kw = dict(stride=(1, 2, 1), padding=(1, 0, 2), dilation=(2, 1, 1), groups=2)
    ours, ref = jt.conv3d(x, w, b, **kw), F.conv3d(x, w, b, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours.square().sum(), (x, w, b))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, w, b))
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    m = jt.Conv3d(4, 8, 3, padding="same").double()
    torch.testing.assert_close(m(x), F.conv3d(x, m.weight, m.bias, padding="same"), rtol=1e-12, atol=1e-12)
    wt = torch.randn(4, 3, 2, 2, 2, dtype=torch.float64, generator=g)
    torch.testing.assert_close(jt.conv_transpose3d(x, wt, stride=2), F.conv_transpose3d(x, wt, stride=2),
                               rtol=1e-12, atol=1e-12)
    assert jaxconv3d.explain((2, 4, 5, 6, 7), (6, 2, 3, 2, 3), groups=2)["forward"]["family"]
    try:
        jaxconv3d.conv3d
    except ImportError as e:
        assert "jaxconv3d[jax]" in str(e), e
    else:
        raise AssertionError("jaxconv3d.conv3d without JAX should raise ImportError")
    print("ok")
    """
)


def test_torch_front_runs_without_jax():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
