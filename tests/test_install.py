"""Install metadata: the extension records the jaxlib whose FFI headers it was built against, and importing it with
an older jaxlib is refused at import with a message naming both versions (not at the first call)."""

from __future__ import annotations

import jaxlib.version
import pytest

from jaxconv3d import _ext, _ffi


def test_extension_records_the_jaxlib_it_was_built_against():
    assert _ext.BUILT_WITH_JAXLIB == jaxlib.version.__version__


@pytest.mark.parametrize("running", ["0.8.0", "0.10.1", "0.9.9.dev20250101"])
def test_older_jaxlib_is_refused_naming_both_versions(running):
    with pytest.raises(ImportError, match=rf"built against jaxlib 0\.10\.2, but jaxlib {running.replace('.', '[.]')} .*rebuild"):
        _ffi.check_jaxlib("0.10.2", running)


@pytest.mark.parametrize("running", ["0.10.2", "0.10.3", "0.11.0", "1.0.0rc1", "0.10.2+cuda12"])
def test_same_or_newer_jaxlib_is_accepted(running):
    _ffi.check_jaxlib("0.10.2", running)
    _ffi.check_jaxlib("unknown", running)
