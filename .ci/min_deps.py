"""What `make test-min-deps` installs and runs: the library at its declared floors.

``python .ci/min_deps.py constraints`` prints a pip constraints file that pins every
dependency of ``[project].dependencies`` in ``pyproject.toml`` to its lower bound
(``>=`` becomes ``==``; jaxlib follows jax), and the test extra's chex to its own.
``python .ci/min_deps.py tests`` prints the library's tests: the doctests of
``polyak_optax`` and every ``tests/test_*.py`` that imports ``polyak_optax`` and whose
module-level imports (with the ``tests`` helpers they import) need nothing beyond the
standard library, jax, optax, numpy, chex, absl, pytest and hypothesis, so a new library
test joins by itself.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"jax", "jaxlib", "optax", "numpy", "chex", "absl", "pytest", "hypothesis"}
ALLOWED |= {"polyak_optax", "tests", "__future__"}


def _pyproject() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the two lists this script reads, by pattern
        lists = {}
        for key in ("dependencies", "test"):
            block = re.search(rf"^{key} = \[(.*?)^\]", text, flags=re.M | re.S)
            lists[key] = re.findall(r'^\s*"([^"]+)"', block.group(1), flags=re.M)
        return {
            "project": {
                "dependencies": lists["dependencies"],
                "optional-dependencies": {"test": lists["test"]},
            }
        }
    return tomllib.loads(text)


def _floor(requirement: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)\s*", requirement)
    return (match.group(1), match.group(2)) if match else None


def constraints() -> list[str]:
    project = _pyproject()["project"]
    pins = {}
    for requirement in project["dependencies"]:
        floor = _floor(requirement)
        if floor is None:
            raise SystemExit(f"min_deps: {requirement!r} has no plain '>=' lower bound")
        pins[floor[0]] = floor[1]
    for requirement in project["optional-dependencies"]["test"]:
        floor = _floor(requirement)
        if floor and floor[0] == "chex":
            pins["chex"] = floor[1]
    if "jax" in pins:
        pins.setdefault("jaxlib", pins["jax"])
    return [f"{name}=={version}" for name, version in pins.items()]


def _imports(path: Path) -> set[str]:
    """The module-level imports (one inside a test function may be guarded by
    ``pytest.importorskip``, as the Flax checks are)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _needs(path: Path, seen: set[Path]) -> set[str]:
    """Top-level packages a test module imports, through the ``tests`` helpers it uses."""
    seen.add(path)
    tops = set()
    for name in _imports(path):
        tops.add(name.split(".")[0])
        if name.startswith("tests."):
            helper = ROOT / (name.replace(".", "/") + ".py")
            if helper.exists() and helper not in seen:
                tops |= _needs(helper, seen)
    return tops


def tests() -> list[str]:
    stdlib = set(sys.stdlib_module_names)
    chosen = ["polyak_optax"]
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        needs = _needs(path, set())
        if "polyak_optax" in needs and needs <= ALLOWED | stdlib:
            chosen.append(str(path.relative_to(ROOT)))
    return chosen


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in ("constraints", "tests"):
        raise SystemExit("usage: python .ci/min_deps.py {constraints|tests}")
    print("\n".join(constraints() if what == "constraints" else tests()))
