"""Checks the built documentation (`make docs` runs it after Sphinx; so does CI).

* every name of ``polyak_optax.__all__`` has its entry in the API reference (the site's
  ``objects.inv``) and a page that documents it;
* no API page shows a type alias expanded into its union, or Sphinx's placeholder for it;
* every page renders math through the MathJax copy shipped in ``_static`` (no CDN);
* a Benchmarks page exists for every ``benchmarks/results/*.json``;
* the README, the package's long description, has no relative link or image (they break
  on a package index);
* with ``--run-examples``: every ```python block of the hand-written pages runs.

Exits non-zero naming each failure.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
HTML = DOCS / "_build" / "html"


def _inventory(path: Path) -> dict[str, str]:
    """``{name: "domain:role"}`` of a Sphinx ``objects.inv``."""
    from sphinx.util.inventory import InventoryFile

    with path.open("rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    return {name: role for role, entries in inventory.items() for name in entries}


def check_api(errors: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    import polyak_optax

    entries = _inventory(HTML / "objects.inv")
    pages = {p: p.read_text() for p in (HTML / "api").glob("*.html")}
    for name in polyak_optax.__all__:
        full = f"polyak_optax.{name}"
        if entries.get(full) not in ("py:function", "py:class"):
            errors.append(f"{full}: no API entry (objects.inv has {entries.get(full)!r})")
        elif not any(f'id="{full}"' in text for text in pages.values()):
            errors.append(f"{full}: no API page documents it")
    for page, text in pages.items():
        plain = re.sub(r"<[^>]+>", "", text)
        for bad in ("TypeAliasForwardRef", "Union[", "jaxlib._jax", "ForwardRef("):
            if bad in plain:
                errors.append(f"{page.name}: shows {bad!r} (an expanded or unresolved type)")


def check_math(errors: list[str]) -> None:
    mathjax = HTML / "_static" / "mathjax" / "tex-chtml.js"
    if not mathjax.exists():
        errors.append(f"{mathjax}: missing (math would not render offline)")
    for page in HTML.rglob("*.html"):
        text = page.read_text()
        for src in re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', text, flags=re.I):
            if "://" in src:
                errors.append(f"{page.relative_to(HTML)}: loads MathJax from {src}")


def check_benchmarks(errors: list[str]) -> None:
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        if not (HTML / "benchmarks" / f"{result.stem}.html").exists():
            errors.append(f"{result.name}: no Benchmarks page")


def check_readme(errors: list[str]) -> None:
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)", text) + re.findall(r'src="([^"]+)"', text):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            errors.append(f"README.md: relative link {target!r} (breaks on a package index)")


def run_examples(errors: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    generated = DOCS / "benchmarks"
    for page in sorted(DOCS.rglob("*.md")):
        if generated in page.parents or "_build" in page.parts:
            continue
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"{page.relative_to(DOCS)} block {i}", "exec"), {})
            except Exception as e:  # every failure is reported, then the exit is non-zero
                errors.append(f"{page.relative_to(DOCS)} block {i}: {type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-examples", action="store_true", help="run the pages' code")
    args = parser.parse_args(argv)
    if not (HTML / "objects.inv").exists():
        print(f"check_docs: {HTML} holds no built site; run `make docs` first", file=sys.stderr)
        return 2
    errors: list[str] = []
    check_api(errors)
    check_math(errors)
    check_benchmarks(errors)
    check_readme(errors)
    if args.run_examples:
        run_examples(errors)
    for error in errors:
        print(f"check_docs: {error}", file=sys.stderr)
    print(f"check_docs: {'FAILED' if errors else 'ok'} ({len(errors)} problem(s))")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
