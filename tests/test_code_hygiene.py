"""The code says what and why in the present tense, in functions that fit on a screen.

* No issue numbers or dates anywhere in the Python files of the library, the training
  app, the models and the benchmarks; no measured timings or narrated history in their
  comments and docstrings (those belong in ``benchmarks/NOTES.md``).
* No function of the library, the training app or the models has more than
  :data:`MAX_FUNCTION_LINES` lines of code (docstrings, comments and blank lines not
  counted); the longest are printed (``pytest -rA`` or ``-s`` shows them).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests._function_lengths import longest_functions

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("polyak_optax", "train", "models", "benchmarks")
LIMITED = ("polyak_optax", "train", "models")  # the benchmarks are scripts: no length limit
MAX_FUNCTION_LINES = 60

#: Anywhere in a file: what ``grep -rnE "issues? [0-9]+|20[0-9]{2}-[0-9]{2}-[0-9]{2}"`` finds.
LAB_NOTE = re.compile(r"issues? [0-9]+|20[0-9]{2}-[0-9]{2}-[0-9]{2}")

#: In comments and docstrings: a timing, a speed-up or a measurement's circumstances.
MEASUREMENT = re.compile(
    r"\bre-?measured\b"
    r"|\bmeasured on \d"
    r"|\b\d+(\.\d+)?(-\d+(\.\d+)?)? ?(ms|us|µs) (a|an|of|on|per|against|for|as|at|in)\b"
    r"|\b\d+(\.\d+)?(-\d+(\.\d+)?)?x (faster|slower)\b"
    r"|\b(took|went from) \d"
    r"|\bon \d+ (shared )?(CPU )?cores\b"
    r"|\bseen (once|twice|\d+ times)\b",
    re.IGNORECASE,
)


def _python_files(folders: tuple[str, ...]) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def _prose(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring line of ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = node.body[0] if node.body else None
            if (
                isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                found += [(n, lines[n - 1]) for n in range(doc.lineno, doc.end_lineno + 1)]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


def _where(path: Path, line: int, text: str) -> str:
    return f"{path.relative_to(ROOT)}:{line}: {text.strip()}"


def test_no_issue_numbers_or_dates_in_the_code():
    hits = [
        _where(path, n, text)
        for path in _python_files(FOLDERS)
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LAB_NOTE.search(text)
    ]
    assert not hits, "lab notes belong in benchmarks/NOTES.md:\n" + "\n".join(hits)


def test_no_measurements_in_comments_or_docstrings():
    hits = [
        _where(path, n, text)
        for path in _python_files(FOLDERS)
        for n, text in _prose(path)
        if MEASUREMENT.search(text)
    ]
    assert not hits, "measurements belong in benchmarks/NOTES.md:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("# Re-measured with the new flags", True),
        ("LeNet-5's step took 2.4 s a step", True),
        ("measured on 2 cores: 234 ms for the forward pass", True),
        ("the epoch 1.05-1.15x faster side by side", True),
        ("On 2 CPU cores, LeNet-5 went from 36 to 19 ms a step", True),
        ("(seen once in CI)", True),
        ("compilation measured apart, then timed", False),
        ("the scheduler's next tick (``CONFIG_HZ=250``: every 4 ms)", False),
        ("a 2x2 max pool, 4x smaller than its input", False),
        ("timeout_ms = int(1000 * seconds)", False),
    ],
)
def test_the_measurement_pattern(text, flagged):
    assert bool(MEASUREMENT.search(text)) == flagged


def test_no_function_is_longer_than_a_screen():
    lengths = longest_functions([str(ROOT / folder) for folder in LIMITED])
    report = "\n".join(
        f"{n:4d}  {Path(name.split('::')[0]).relative_to(ROOT)}::{name.split('::')[1]}"
        for name, n in lengths[:15]
    )
    print(f"longest functions (lines of code):\n{report}")
    too_long = [(name, n) for name, n in lengths if n > MAX_FUNCTION_LINES]
    assert not too_long, (
        f"{len(too_long)} function(s) over {MAX_FUNCTION_LINES} lines of code; the longest:\n"
        + report
    )
