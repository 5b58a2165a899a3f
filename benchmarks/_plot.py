"""One PNG writer shared by the benchmark scripts (matplotlib, from the ``bench`` extra).

Usage from a script::

    from _plot import add_plot_option, write_plot

    add_plot_option(parser, __file__)          # --plot PATH (default: the script's name .png), --no-plot
    ...
    write_plot(args.plot, {                     # series name -> {x: y}
        "envcrypt.encrypt": {65536: 1.9, 1048576: 3.1},
        "AESGCM one-shot": {65536: 1.2, 1048576: 1.0},
    }, title="encrypt throughput", xlabel="object size (bytes)", ylabel="GB/s", logx=True)

Numeric x values draw one line per series (sizes in bytes get KiB/MiB tick labels
when ``logx``); string x values (targets, operations) draw grouped bars.  The
scripts are run as ``python benchmarks/bench_x.py``, so the script's own folder is
on ``sys.path`` and ``from _plot import ...`` works without a package.

``write_plot`` returns the path written, or None after a one-line hint when
matplotlib is missing or ``path`` is None (``--no-plot``): a benchmark's table
never depends on plotting.  Several figures from one script: call it once per
figure with ``suffixed(path, "latency")`` -> ``bench_x-latency.png``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

__all__ = ["add_plot_option", "write_plot", "suffixed"]

Series = Mapping[str, Mapping[float, float] | Mapping[str, float]]


def add_plot_option(parser: argparse.ArgumentParser, script: str) -> None:
    """``--plot PATH`` (default ``<script>.png`` beside the script) and ``--no-plot``."""
    default = os.path.splitext(os.path.abspath(script))[0] + ".png"
    parser.add_argument("--plot", default=default, metavar="PATH", help=f"PNG to write (default {default})")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no PNG")


def suffixed(path: str | None, suffix: str) -> str | None:
    """``bench.png`` -> ``bench-SUFFIX.png`` (None stays None)."""
    if path is None:
        return None
    root, ext = os.path.splitext(path)
    return f"{root}-{suffix}{ext or '.png'}"


def _size_label(value: float) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor:
            scaled = value / factor
            return f"{scaled:g} {unit}"
    return f"{value:g} B"


def write_plot(
    path: str | None,
    series: Series,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
    sizes: bool = True,
) -> str | None:
    """Draw ``series`` (name -> {x: y}) into a PNG at ``path``; see the module docstring.

    ``sizes``: with numeric x and ``logx``, label the ticks as byte sizes.
    Series with no points are left out; an empty figure is not written.
    """
    if path is None:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(f"(no plot: matplotlib is not installed; pip install 'envcrypt[bench]' to write {path})")
        return None
    drawn = {name: dict(points) for name, points in series.items() if points}
    if not drawn:
        return None
    # a Figure without pyplot: no global backend switch, no state left behind in the caller
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    categorical = any(isinstance(x, str) for points in drawn.values() for x in points)
    if categorical:
        labels = list(dict.fromkeys(str(x) for points in drawn.values() for x in points))
        width = 0.8 / len(drawn)
        for i, (name, points) in enumerate(drawn.items()):
            xs = [j + (i - (len(drawn) - 1) / 2) * width for j, label in enumerate(labels) if label in points]
            ys = [points[label] for label in labels if label in points]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks(range(len(labels)), labels, rotation=20 if max(map(len, labels)) > 10 else 0, ha="right")
    else:
        for name, points in drawn.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
        if logx:
            ax.set_xscale("log", base=2)
            if sizes:
                ticks = sorted({x for points in drawn.values() for x in points})
                ax.set_xticks(ticks, [_size_label(float(x)) for x in ticks])
                ax.minorticks_off()
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written: {path}")
    return path
