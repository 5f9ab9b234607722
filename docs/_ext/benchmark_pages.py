"""Sphinx extension: one Benchmarks page per ``benchmarks/results/*.json``, at build time.

Every JSON file that a benchmark writes (``benchmarks/_common.py``'s format: the machine,
versions, date, command and grid at the top, then ``rows``) becomes the page
``benchmarks/<stem>``: its set-up, its rows as a table (rows that differ only by ``seed``
become one row of mean ± std and their count), its ``verdicts`` where it has them, its
plots (``<stem>.png``, ``<stem>-*.png``) and the raw file to download. A new results file
appears in the site by itself, through the glob of ``benchmarks.md``'s table of contents.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
OUT = Path(__file__).resolve().parents[1] / "benchmarks"  # generated; ignored by git
_SETUP_KEYS = ("device", "versions", "date", "command", "grid", "grid_note")
_NOT_RESULTS = {*_SETUP_KEYS, "benchmark", "device_kind", "platform", "device_count"}
_NOT_RESULTS |= {"cpu_count", "settings", "rows", "verdicts", "figures", "variant"}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Scalars of a row, with one level of nested dicts as ``outer.inner``."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat |= {f"{key}.{k}": v for k, v in value.items() if _scalar(v)}
        elif _scalar(value):
            flat[key] = value
    return flat


def _by_seed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that differ only by ``seed`` and their float fields, as mean ± std (n)."""
    rows = [_flatten(row) for row in rows]
    if not rows or not all("seed" in row for row in rows):
        return rows
    columns = [k for k in rows[0] if k != "seed"]
    floats = [k for k in columns if any(isinstance(r.get(k), float) for r in rows)]
    keys = [k for k in columns if k not in floats]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    merged = []
    for group_key, group in groups.items():
        out: dict[str, Any] = dict(zip(keys, group_key, strict=True))
        for k in floats:
            values = [r[k] for r in group if isinstance(r.get(k), (int, float))]
            if not values:
                out[k] = None
            elif len(values) == 1:
                out[k] = _fmt(float(values[0]))
            else:
                mean, std = statistics.fmean(values), statistics.stdev(values)
                out[k] = f"{mean:.4g} ± {std:.2g}"
        out["seeds"] = len(group)
        merged.append(out)
    return merged


def _merge_std(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``x`` and ``x_std`` as one column ``x`` of ``mean ± std``."""
    merged = []
    for row in rows:
        out = {}
        for key, value in row.items():
            if key.endswith("_std") and key[:-4] in row:
                continue
            std = row.get(f"{key}_std")
            if isinstance(value, float) and isinstance(std, float) and std > 0:
                out[key] = f"{_fmt(value)} ± {std:.2g}"
            else:
                out[key] = value
        merged.append(out)
    return merged


def _table(rows: Iterable[dict[str, Any]]) -> list[str]:
    rows = [_flatten(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in columns) + " |" for r in rows]
    return lines


def _title(path: Path, data: dict[str, Any]) -> str:
    """The heading of the benchmark's Markdown report beside the JSON, else its name."""
    report = path.with_suffix(".md")
    if report.exists():
        first = report.read_text().splitlines()[0]
        if first.startswith("# "):
            return first[2:].strip()
    return f"{data.get('benchmark', path.stem)} ({data.get('device', 'unknown device')})"


def _setup(data: dict[str, Any]) -> list[str]:
    lines = []
    for key in _SETUP_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        if key == "command":
            value = f"`{value}`"
        lines.append(f"* **{key.replace('_', ' ')}**: {value}")
    return lines


def _wide(table: list[str]) -> list[str]:
    """A table whose cells do not wrap (it scrolls sideways instead)."""
    return [":::{container} nowrap-table", *table, ":::"]


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _section(key: str, value: Any, level: str = "##") -> list[str]:
    """Another result of the file as a table (or a list), where its shape allows one."""
    heading = [f"{level} {key.replace('_', ' ')}", ""]
    if _records(value):
        return [*heading, *_wide(_table(_merge_std(value))), ""]
    if isinstance(value, dict) and value:
        if all(_records(v) for v in value.values()):
            return heading + [line for k, v in value.items() for line in _section(k, v, "###")]
        if all(isinstance(v, dict) for v in value.values()):
            rows = [{key: k, **v} for k, v in value.items()]
            return [*heading, *_wide(_table(rows)), ""]
        if all(_scalar(v) for v in value.values()):
            return [*heading, *(f"* {k}: {_fmt(v)}" for k, v in value.items()), ""]
    if _scalar(value) and value is not None:
        return [*heading, _fmt(value), ""]
    return []


def page(path: Path, files: Path, title: str) -> str:
    """The Markdown page of one results file; copies its plots and itself into ``files``."""
    data = json.loads(path.read_text())
    lines = [f"# {title}", "", f"`benchmarks/results/{path.name}`", "", *_setup(data), ""]
    rows = data.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        lines += ["## Results", "", *_wide(_table(_merge_std(_by_seed(rows)))), ""]
    verdicts = data.get("verdicts")
    if isinstance(verdicts, list) and verdicts and all(isinstance(v, dict) for v in verdicts):
        lines += ["## Verdicts", "", *_wide(_table(verdicts)), ""]
    for key, value in data.items():
        if key not in _NOT_RESULTS:
            lines += _section(key, value)
    plots = sorted({*RESULTS.glob(f"{path.stem}.png"), *RESULTS.glob(f"{path.stem}-*.png")})
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            shutil.copy2(plot, files / plot.name)
            lines += [f"![{plot.stem}](_files/{plot.name})", ""]
    shutil.copy2(path, files / path.name)
    lines += [f"Raw data: {{download}}`{path.name} <_files/{path.name}>`.", ""]
    return "\n".join(lines)


def generate(app: Any = None) -> list[Path]:
    """Writes ``docs/benchmarks/<stem>.md`` for every results file; returns the pages."""
    if OUT.exists():
        shutil.rmtree(OUT)
    files = OUT / "_files"
    files.mkdir(parents=True)
    results = sorted(RESULTS.glob("*.json"))
    titles = {path: _title(path, json.loads(path.read_text())) for path in results}
    pages = []
    for path in results:
        title = titles[path]
        if list(titles.values()).count(title) > 1:  # two runs of one benchmark: name the file
            title = f"{title}: {path.stem}"
        target = OUT / f"{path.stem}.md"
        target.write_text(page(path, files, title))
        pages.append(target)
    return pages


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
