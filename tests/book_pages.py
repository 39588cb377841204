"""The pages of the book's table of contents, shared by the book and notation tests."""

from __future__ import annotations

import re
from pathlib import Path


def toc_pages(toc: Path) -> list[str]:
    """Every page of a jb-book TOC (root first), as repo-relative paths without extension."""
    import yaml  # PyYAML comes with jupyter-book

    data = yaml.safe_load(toc.read_text())
    pages = [data["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in data.items() if key != "root"})
    return [re.sub(r"\.(md|ipynb)$", "", page) for page in pages]
