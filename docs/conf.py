"""Sphinx configuration of the polyak_optax documentation (built by `make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # polyak_optax from this checkout, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import polyak_optax  # noqa: E402

project = "polyak_optax"
author = "polyak_optax maintainers"
copyright = "polyak_optax maintainers"
release = version = polyak_optax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx-mathjax-offline",  # serves MathJax 3 from _static: math renders offline
    "benchmark_pages",  # docs/_ext: the Benchmarks pages, from benchmarks/results/*.json
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings; type hints in the parameter descriptions, with optax's
# aliases kept as names (expanded, optax.ScalarOrSchedule is a union of about 20 lines).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False  # a state field's type is in its description
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
_OPTAX_ALIASES = (
    "ScalarOrSchedule",
    "Schedule",
    "Params",
    "Updates",
    "OptState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
)
autodoc_type_aliases = {f"optax.{name}": f"optax.{name}" for name in _OPTAX_ALIASES}
autodoc_type_aliases |= {
    "jax.typing.ArrayLike": "jax.typing.ArrayLike",
    "ArrayLike": "jax.typing.ArrayLike",
    "LayersFn": "Callable[[KeyPath], Hashable]",
}
autosummary_generate = False

# Sphinx writes an alias inside a union (``optax.ScalarOrSchedule | None``) as the repr of
# its placeholder, ``TypeAliasForwardRef('optax.ScalarOrSchedule')``: show the name alone.
from sphinx.util.inspect import TypeAliasForwardRef  # noqa: E402

TypeAliasForwardRef.__repr__ = lambda self: self.name

html_theme = "sphinx_book_theme"
html_title = f"polyak_optax {version}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
}
html_last_updated_fmt = None
toc_object_entries = False  # the page contents list sections, not every function
