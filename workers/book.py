"""The book worker: the CRUD template with a field spec, as a worked example.

    python -m mesh.node --topic books     # topics.toml maps the topic to role "workers.book"
    python -m workers.book --db-path var/books.db   # standalone, without a mesh

A book has a title, an author, an ISBN (ISBN-10 or ISBN-13 with a valid check
digit; hyphens and spaces are dropped, so the stored form is digits, plus a
final X for some ISBN-10s) and an optional publication year. ISBNs are unique.
docs/writing-a-worker.md walks through this file.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import ClassVar

from workers.base import setup_logging  # noqa: F401 - the role's logging hook
from workers.things.role import entry_points
from workers.things.schema import Field, invalid
from workers.things.worker import ThingConfig, ThingWorker

ROLE = "workers.book"

ISBN_EXPECTED = "an ISBN-10 or ISBN-13 with a valid check digit (hyphens and spaces allowed)"


def normalize_isbn(text: str) -> str:
    """The ISBN's digits (and a final X), or ValueError saying what was expected."""
    isbn = text.replace("-", "").replace(" ", "").upper()
    if len(isbn) == 10 and isbn[:9].isdigit() and (isbn[9].isdigit() or isbn[9] == "X"):
        total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(isbn))
        if total % 11 == 0:
            return isbn
    elif len(isbn) == 13 and isbn.isdigit() and isbn.startswith(("978", "979")):
        total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(isbn))
        if total % 10 == 0:
            return isbn
    raise ValueError(ISBN_EXPECTED)


def sane_year(year: int) -> int:
    """Years from 3000 BC (as -3000) to next year; forthcoming books may carry next year's date."""
    latest = time.gmtime().tm_year + 1
    if not -3000 <= year <= latest:
        raise ValueError(f"a year from -3000 to {latest}")
    return year


@dataclass(frozen=True)
class BookConfig(ThingConfig):
    """ThingConfig with the book worker's defaults."""

    name: str = "books"
    topic: str = "books"
    db_path: str = "var/books.db"


class BookWorker(ThingWorker):
    role = ROLE
    config_class: ClassVar[type[ThingConfig]] = BookConfig
    kind = "books"
    strict = True
    fields = {
        "title": Field(str, required=True, min=1, max=500, index=True),
        "author": Field(str, required=True, min=1, max=200, index=True),
        "isbn": Field(str, required=True, max=32, check=normalize_isbn, expected=ISBN_EXPECTED, unique=True),
        "year": Field(int, check=sane_year, index=True),
    }

    def validate(self, data: dict) -> dict:
        # Cross-field hook, used here to normalise: surrounding spaces are not
        # part of a title or a name, and one made only of spaces is empty.
        for name in ("title", "author"):
            data[name] = data[name].strip()
            if not data[name]:
                raise invalid(name, "a non-blank string", "")
        return data


# What `python -m mesh.node --topic books` calls (topics.toml: role = "workers.book").
role_config, run_role, main = entry_points(BookWorker)

if __name__ == "__main__":
    sys.exit(main())
