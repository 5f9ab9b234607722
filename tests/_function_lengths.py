"""Lines of code of every function in a set of folders (docstrings, comments, blanks excluded).

A line counts when it holds a token of code: a line that is blank, only a comment, or
inside a docstring (of a module, class or function) does not. A function's count runs
from its ``def`` line to its last line and includes its nested functions and classes;
decorators are not counted.

Usage: ``python tests/_function_lengths.py polyak_optax train models`` prints the
longest functions first.
"""

from __future__ import annotations

import ast
import io
import pathlib
import sys
import tokenize

_NOT_CODE = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)


def _docstring_lines(tree: ast.AST) -> set[int]:
    """The line numbers covered by a docstring of the module, a class or a function."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def _code_lines(source: str, tree: ast.AST) -> set[int]:
    """Line numbers that hold a token of code outside any docstring."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _NOT_CODE:
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return lines - _docstring_lines(tree)


def file_function_lengths(path: str | pathlib.Path) -> list[tuple[str, int]]:
    """``(qualified name, lines of code)`` of every function in one Python file.

    The qualified name is ``<path>::<outer>.<inner>`` (classes and enclosing
    functions joined by dots).
    """
    source = pathlib.Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    code = _code_lines(source, tree)
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                span = range(child.lineno, child.end_lineno + 1)
                found.append((f"{path}::{name}", sum(1 for line in span if line in code)))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def longest_functions(paths: list[str]) -> list[tuple[str, int]]:
    """``(qualified name, lines of code)`` of every function under ``paths``, longest first.

    ``paths`` are folders (searched recursively for ``*.py``) or single files. Ties keep
    the order of the files and of the functions in them.
    """
    found: list[tuple[str, int]] = []
    for root in paths:
        root_path = pathlib.Path(root)
        files = [root_path] if root_path.is_file() else sorted(root_path.rglob("*.py"))
        for file in files:
            found.extend(file_function_lengths(file))
    return sorted(found, key=lambda item: -item[1])


if __name__ == "__main__":
    for name, length in longest_functions(sys.argv[1:] or ["."])[:20]:
        print(f"{length:4d}  {name}")
