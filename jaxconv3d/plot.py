"""Speedup bars from a `jaxconv3d bench` JSON: best reference / best of ours, per configuration and precision, one
panel per pass (forward, forward+backward), a line at 1x. Used by `jaxconv3d bench --plot FILE.png` and
`jaxconv3d plot BENCH.json FILE.png`. matplotlib is optional: `require_matplotlib()` says how to get it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PASS_TITLES = {"fwd": "forward", "fwd_bwd": "forward + backward"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise PlotUnavailable (with the install command) unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise PlotUnavailable("plotting needs matplotlib: pip install matplotlib") from error


def speedups(bench: dict[str, Any]) -> dict[str, dict[tuple[str, str], float]]:
    """{pass: {(config, precision): best reference ms / best ours ms}} from a bench JSON; missing entries skipped."""
    table: dict[str, dict[tuple[str, str], float]] = {name: {} for name in PASS_TITLES}
    for result in bench.get("results", []):
        for pass_name, summary in result.get("summary", {}).items():
            value = summary.get("speedup")
            if pass_name in table and value:
                table[pass_name][(result["config"], result["precision"])] = float(value)
    return table


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def plot_bench(bench: dict[str, Any] | str | Path, out_png: str | Path) -> Path:
    """Draw the speedup bars of `bench` (a bench JSON dict or its path) into `out_png`; returns the path written.

    Raises PlotUnavailable without matplotlib, ValueError when the JSON holds no speedups."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if not isinstance(bench, dict):
        bench = json.loads(Path(bench).read_text())
    table = speedups(bench)
    if not any(table.values()):
        raise ValueError("the bench JSON has no speedups to plot (no results with both ours and a reference)")
    configs = list(dict.fromkeys(c for entries in table.values() for c, _ in entries))
    precisions = list(dict.fromkeys(p for entries in table.values() for _, p in entries))
    device = bench.get("environment", {}).get("device", "")
    fig, axes = plt.subplots(len(table), 1, figsize=(max(8.0, 1.3 * len(configs)) + 2.5, 3.6 * len(table)), squeeze=False)
    width = 0.8 / max(1, len(precisions))
    for ax, (pass_name, entries) in zip(axes[:, 0], table.items()):
        for i, precision in enumerate(precisions):
            values = [entries.get((config, precision), float("nan")) for config in configs]
            shown = [v for v in values if not math.isnan(v)]
            label = f"{precision} (geomean {geomean(shown):.2f}x)" if shown else precision
            ax.bar([k + (i - (len(precisions) - 1) / 2) * width for k in range(len(configs))], values, width,
                   label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_xticks(range(len(configs)), configs)
        ax.set_ylabel("best reference / best ours")
        ax.set_title(f"{PASS_TITLES[pass_name]}{' on ' + device if device else ''} (> 1: jaxconv3d faster)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
