"""Shared plumbing of the benchmarks: device header, timing, tables, result files.

Every benchmark module ``benchmarks.NAME`` has ``main(argv) -> int`` and writes
``<out-dir>/NAME-<device>.md`` and ``.json`` (and its PNGs) through
:func:`write_results`. The JSON holds the header of :func:`header` (``"device"``,
versions, date, the grid that ran and how it was reduced) plus the benchmark's rows.

Measurement rules (airbench style): compile and warm-up runs are excluded, the clock is
read only after ``jax.block_until_ready``, timings are medians over repeats, ratios are
measured side by side in one process, and several seeds are reported as mean +- std.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GRIDS = ("auto", "full", "reduced", "smoke")
MAX_PNG_BYTES = 200_000


def device_info() -> dict[str, Any]:
    """What the benchmarks run on: platform, device kind, count, a label and a file tag.

    The label reads ``"CPU (2 cores)"`` on a CPU (cores from ``os.cpu_count``) and e.g.
    ``"1x NVIDIA H100 80GB HBM3"`` on GPUs; the tag (``"cpu"``, ``"nvidia-h100-80gb-hbm3"``)
    goes into the result file names.

    Example:
      >>> info = device_info()
      >>> sorted(info)
      ['count', 'device_kind', 'label', 'platform', 'tag']
    """
    devices = jax.devices()
    platform_name = devices[0].platform
    kind = devices[0].device_kind
    if platform_name == "cpu":
        cores = os.cpu_count() or 1
        label = f"CPU ({cores} cores)"
        tag = "cpu"
    else:
        label = f"{len(devices)}x {kind}"
        tag = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or platform_name
    return {
        "platform": platform_name,
        "device_kind": kind,
        "count": len(devices),
        "label": label,
        "tag": tag,
    }


def resolve_grid(grid: str) -> str:
    """``auto`` -> ``full`` on an accelerator, ``reduced`` on a CPU; other values unchanged.

    Example:
      >>> resolve_grid("smoke")
      'smoke'
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if grid != "auto":
        return grid
    return "reduced" if jax.default_backend() == "cpu" else "full"


def base_parser(description: str) -> argparse.ArgumentParser:
    """The flags every benchmark takes: ``--grid``, ``--smoke``, ``--out-dir``.

    Example:
      >>> args = base_parser("x").parse_args(["--smoke"])
      >>> args.grid, args.smoke
      ('auto', True)
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--grid",
        choices=GRIDS,
        default="auto",
        help="full: the issue's grid (for a GPU); reduced: the CPU grid; auto: full on an "
        "accelerator, reduced on a CPU; smoke: seconds, for the test suite",
    )
    parser.add_argument("--smoke", action="store_true", help="same as --grid smoke")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where the .md/.json/.png go (default {RESULTS_DIR})",
    )
    return parser


def grid_of(args: argparse.Namespace) -> str:
    """The resolved grid name of parsed :func:`base_parser` flags."""
    return "smoke" if args.smoke else resolve_grid(args.grid)


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (a bad value is a one-line usage error).

    Example:
      >>> positive_int("3")
      3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def chosen_grid(
    args: argparse.Namespace,
    grids: dict[str, dict[str, Any]],
    notes: dict[str, str],
    overrides: dict[str, Any],
) -> tuple[str, dict[str, Any], str]:
    """``(grid name, grid, note)``: the grid the flags chose, with the overrides applied.

    Every override that is not ``None`` replaces the grid's entry (lists become tuples)
    and is named in the note, so a report never hides that its grid was changed.

    Example:
      >>> args = base_parser("x").parse_args(["--smoke"])
      >>> chosen_grid(args, {"smoke": {"epochs": 1, "k": 2}}, {"smoke": "tiny."},
      ...             {"epochs": 3, "k": None})
      ('smoke', {'epochs': 3, 'k': 2}, 'tiny. Overridden: epochs=3.')
    """
    name = grid_of(args)
    grid, note = dict(grids[name]), notes[name]
    for key, value in overrides.items():
        if value is not None:
            grid[key] = tuple(value) if isinstance(value, list) else value
            note += f" Overridden: {key}={grid[key]}."
    return name, grid, note.strip()


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers."""
    import flax
    import jaxlib
    import optax

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def header(benchmark: str, grid: str, grid_note: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The top of every result JSON: device, versions, date, grid and command.

    Args:
      benchmark: the module name, e.g. ``"optimizer_overhead"``.
      grid: ``full``, ``reduced`` or ``smoke``.
      grid_note: one sentence on what was reduced against the full grid (or ``""``).
      settings: every setting that decides the numbers (batch sizes, epochs, ...).

    Example:
      >>> h = header("demo", "smoke", "", {"batch_size": 4})
      >>> h["benchmark"], h["grid"], "device" in h, h["settings"]["batch_size"]
      ('demo', 'smoke', True, 4)
    """
    info = device_info()
    return {
        "benchmark": benchmark,
        "device": info["label"],
        "device_kind": info["device_kind"],
        "platform": info["platform"],
        "device_count": info["count"],
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m benchmarks." + benchmark + " " + " ".join(sys.argv[1:]),
        "grid": grid,
        "grid_note": grid_note,
        "settings": settings,
    }


def header_markdown(head: dict[str, Any], title: str) -> str:
    """The Markdown lines above a benchmark's tables (device, versions, grid).

    Example:
      >>> md = header_markdown(header("demo", "smoke", "tiny", {}), "Demo")
      >>> md.splitlines()[0].startswith("# Demo")
      True
    """
    v = head["versions"]
    lines = [
        f"# {title} — {head['device']}",
        "",
        f"* Device: **{head['device']}** ({head['platform']}, {head['device_kind']}, "
        f"{head['device_count']} device(s)); jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"optax {v['optax']}, flax {v['flax']}, Python {v['python']}.",
        f"* Date (UTC): {head['date']}. Command: `{head['command'].strip()}`.",
        f"* Grid: **{head['grid']}**" + (f". {head['grid_note']}" if head["grid_note"] else "."),
    ]
    return "\n".join(lines) + "\n"


def block(tree: Any) -> Any:
    """``jax.block_until_ready`` on a pytree; returns it."""
    return jax.block_until_ready(tree)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds of ``fn(*args, **kwargs)`` until its outputs are ready, and the outputs.

    Example:
      >>> import jax.numpy as jnp
      >>> seconds, out = timed(jnp.add, 1.0, 2.0)
      >>> seconds >= 0.0, float(out)
      (True, 3.0)
    """
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(out)
    return time.perf_counter() - start, out


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence.

    Example:
      >>> median([3.0, 1.0, 2.0, 10.0])
      2.5
    """
    if not values:
        raise ValueError("values must not be empty")
    return float(statistics.median(values))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are kept.

    Example:
      >>> mean_std([1.0, 3.0])
      (2.0, 1.4142135623730951)
    """
    if not values:
        raise ValueError("values must not be empty")
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def fmt_pm(values: Sequence[float], digits: int = 4) -> str:
    """``"mean ± std"`` for several values, the value alone for one.

    Example:
      >>> fmt_pm([0.5]), fmt_pm([1.0, 3.0], 2)
      ('0.5000', '2.00 ± 1.41')
    """
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A GitHub Markdown table; floats keep their given formatting (pass strings).

    ``align`` has one letter a column, ``l`` or ``r`` (right-aligned: ``---:``); the
    default leaves every column as GitHub's default (left).

    Example:
      >>> print(markdown_table(["a", "b"], [[1, "x"]]))
      | a | b |
      | --- | --- |
      | 1 | x |
      >>> print(markdown_table(["a", "n"], [["x", 1]], align="lr"))
      | a | n |
      | --- | ---: |
      | x | 1 |
    """
    align = align or "l" * len(headers)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align: one of l/r for each of the {len(headers)} columns, got {align!r}")
    out = ["| " + " | ".join(map(str, headers)) + " |"]
    out.append("| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |")
    out.extend("| " + " | ".join(map(str, row)) + " |" for row in rows)
    return "\n".join(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic | jax.Array | np.ndarray):
        x = np.asarray(x).tolist()
        return _jsonable(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN/inf
    if isinstance(x, Path):
        return str(x)
    return x


def result_paths(out_dir: Path, benchmark: str, suffix: str = "") -> tuple[Path, Path]:
    """``(md, json)`` paths ``<out_dir>/<benchmark>-<tag><suffix>.md/.json``."""
    stem = f"{benchmark}-{device_info()['tag']}{suffix}"
    return Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.json"


def png_path(out_dir: Path, benchmark: str, what: str = "") -> Path:
    """``<out_dir>/<benchmark>-<tag>[-what].png``."""
    stem = f"{benchmark}-{device_info()['tag']}" + (f"-{what}" if what else "")
    return Path(out_dir) / f"{stem}.png"


def write_results(
    out_dir: Path, benchmark: str, payload: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """Writes the Markdown report and the strict JSON (NaN -> null); returns both paths.

    Example:
      >>> import tempfile
      >>> d = Path(tempfile.mkdtemp())
      >>> md, js = write_results(d, "demo", {"device": "x", "rows": [float("nan")]}, "# x\\n")
      >>> json.loads(js.read_text())["rows"]
      [None]
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = result_paths(out_dir, benchmark)
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    json_path.write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
    return md_path, json_path


def save_figure(fig: Any, path: Path, dpi: int = 80) -> Path:
    """Saves a Matplotlib figure as PNG, lowering the dpi until it is under 200 KB.

    Example:
      >>> import matplotlib; matplotlib.use("Agg")
      >>> import matplotlib.pyplot as plt, tempfile
      >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1])
      >>> p = save_figure(fig, Path(tempfile.mkdtemp()) / "f.png")
      >>> 0 < p.stat().st_size < MAX_PNG_BYTES
      True
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if path.stat().st_size < MAX_PNG_BYTES or dpi <= 40:
            break
        dpi = int(dpi * 0.8)
    plt.close(fig)
    return path


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log(*parts: Any) -> None:
    """Progress line on stderr (the tables go to stdout)."""
    print(*parts, file=sys.stderr, flush=True)


def best_and_lowest(
    history: Sequence[dict[str, Any]], acc_key: str = "test_accuracy", loss_key: str = "test_loss"
) -> dict[str, Any]:
    """Table 2.1's columns: best accuracy with its time and epoch, lowest loss likewise.

    The first epoch that reaches the best value counts; non-finite values never win.

    Example:
      >>> h = [{"epoch": 1, "time": 1.0, "test_accuracy": 0.5, "test_loss": 1.0},
      ...      {"epoch": 2, "time": 2.0, "test_accuracy": 0.7, "test_loss": 1.2}]
      >>> r = best_and_lowest(h)
      >>> r["max_accuracy"], r["max_accuracy_epoch"], r["min_loss"], r["min_loss_epoch"]
      (0.7, 2, 1.0, 1)
    """
    finite = lambda v: v is not None and math.isfinite(v)
    best = None
    lowest = None
    for rec in history:
        a, l_ = rec.get(acc_key), rec.get(loss_key)
        if finite(a) and (best is None or a > best[acc_key]):
            best = rec
        if finite(l_) and (lowest is None or l_ < lowest[loss_key]):
            lowest = rec
    nan = float("nan")
    return {
        "max_accuracy": best[acc_key] if best else nan,
        "max_accuracy_time_s": best["time"] if best else nan,
        "max_accuracy_epoch": best["epoch"] if best else None,
        "min_loss": lowest[loss_key] if lowest else nan,
        "min_loss_time_s": lowest["time"] if lowest else nan,
        "min_loss_epoch": lowest["epoch"] if lowest else None,
    }


def time_to_reach(
    history: Sequence[dict[str, Any]], target: float, key: str = "test_accuracy"
) -> tuple[float, int | None]:
    """Training time and epoch at which ``key`` first reaches ``target`` (NaN, None if never).

    Example:
      >>> time_to_reach([{"epoch": 1, "time": 2.0, "test_accuracy": 0.9}], 0.85)
      (2.0, 1)
    """
    for rec in history:
        v = rec.get(key)
        if v is not None and math.isfinite(v) and v >= target:
            return float(rec["time"]), int(rec["epoch"])
    return float("nan"), None
