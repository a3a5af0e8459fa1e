"""Terminal and JSON output shared by `jaxconv3d check` and `jaxconv3d bench`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence


# ---- output

QUIET, NORMAL, VERBOSE = 0, 1, 2
verbosity = NORMAL  # set by the command line's -q / -v


def say(text: str, level: int = NORMAL) -> None:
    """Print `text` on stdout when the verbosity is at least `level` (-q: only results tables and verdicts)."""
    if verbosity >= level:
        print(text)


class Progress:
    """A one-line progress bar on stderr (tqdm's when it is installed); silent when stderr is not a terminal,
    where redrawn lines would only fill logs. With -v, one plain line per step instead (readable in logs too);
    with -q, nothing."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.done, self.description = total, 0, description
        self._lines = verbosity >= VERBOSE
        self._draw = sys.stderr.isatty() and verbosity >= NORMAL and not self._lines
        try:
            from tqdm import tqdm
        except ImportError:
            self._tqdm = None
        else:
            self._tqdm = tqdm(total=total, desc=description, file=sys.stderr, leave=False, disable=not self._draw)

    def update(self, label: str) -> None:
        self.done += 1
        if self._lines:
            print(f"{self.description} {self.done}/{self.total} {label}", file=sys.stderr, flush=True)
            return
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(label)
            self._tqdm.update()
            return
        if not self._draw:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{self.description} [{bar}] {self.done}/{self.total} {label:<40.40}")
        sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._draw:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left_columns: int) -> str:
    """Plain-text table; the first `left_columns` columns are left-aligned, the rest (numbers) right-aligned."""
    cells = [list(map(str, headers)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left_columns else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def prepare_json_path(path: str | os.PathLike) -> None:
    """Create the folder of a --json path (before the run, so a path that cannot be written fails at once).

    Raises OSError (naming the path) when the folder cannot be created or the path is a folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder")


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")
    say(f"wrote {path}")


def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
