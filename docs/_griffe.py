"""Griffe extension of the documentation site (``extensions:`` in mkdocs.yml; not a page).

The docstrings follow Google style with two habits griffe reads differently:

* ``Example:`` (singular) heads the doctest section; griffe would make it an admonition and
  render the ``>>>`` lines as prose, so it is read as ``Examples:`` (rendered as code);
* Sphinx roles (:func:`~overparam.prune.wanda`) name other objects; each becomes an optional
  cross-reference: a link where the target is in the API reference, plain code otherwise.

Only the text griffe renders changes; the source files (and their doctests) are untouched.
"""

from __future__ import annotations

import re

import griffe

EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)`")


def _role(m: re.Match) -> str:
    short, target = m.group(1), m.group(2)
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'


def restyle(text: str) -> str:
    """The docstring ``text`` as the site renders it (``Example:`` → ``Examples:``, roles → links)."""
    return ROLE.sub(_role, EXAMPLE.sub(r"\1Examples:", text))


class DocstringStyle(griffe.Extension):
    """Applies :func:`restyle` to every docstring once the object tree is loaded."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = restyle(obj.docstring.value)
