"""The `jaxconv3d` command's entry point: the CLI (`cli.py`) compares against PyTorch and imports it, so this door
answers `--version` and a missing torch with a clear message instead of a traceback (a JAX-only install has the
library, not the command's references)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Sequence

MISSING_TORCH = (
    "jaxconv3d: the check, bench and plot commands compare against PyTorch, which is not installed here; "
    "install it (pip install 'jaxconv3d[torch]') to use them. The library itself (import jaxconv3d) needs only JAX."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from . import __version__

        print(f"jaxconv3d {__version__}")
        return 0
    if importlib.util.find_spec("torch") is None or sys.modules.get("torch", False) is None:
        print(MISSING_TORCH, file=sys.stderr)
        return 2
    from .cli import main as cli_main

    return cli_main(args)
