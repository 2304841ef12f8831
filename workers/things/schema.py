"""Field specs and validation for things.

A worker declares its fields as a class-level mapping of name to `Field`; the
`Schema` built from it checks a whole document (types, bounds, patterns, the
field's own `check`) and then runs the worker's `validate(data)` hook for rules
that span fields. Every refusal is an `InvalidInput` naming the field and what
was expected, so a caller can fix its request without reading our code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from workers.errors import InvalidInput

# Keys the store owns; a document may not set them itself.
META_FIELDS = ("id", "version", "created_at", "updated_at")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "a list", dict: "an object"}


def invalid(field: str, expected: str, got: Any = None, *, show_got: bool = True) -> InvalidInput:
    """An InvalidInput saying which field was wrong and what it should have been."""
    message = f"{field}: expected {expected}"
    if show_got:
        message += f", got {_short(got)}"
    # details repeat the parts so callers need not parse the message.
    return InvalidInput(message, details={"field": field, "expected": expected})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Field:
    """One field of a thing.

    `type` is one of str, int, float, bool, list, dict (float also accepts
    integers). `min`/`max` bound numbers by value and strings/lists by length.
    `check` may normalise the value (return the new value) or raise ValueError
    whose text says what was expected. `unique` fields get a unique index;
    `index` fields an ordinary one (both speed up filters and ordering).
    """

    type: type = str
    required: bool = False
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    choices: tuple | None = None
    check: Callable[[Any], Any] | None = None
    expected: str | None = None
    unique: bool = False
    index: bool = False

    def describe(self) -> str:
        """What a valid value looks like, in words (used in error messages)."""
        if self.expected:
            return self.expected
        text = TYPE_NAMES.get(self.type, self.type.__name__)
        if self.choices is not None:
            text += " among " + ", ".join(repr(c) for c in self.choices)
        if self.pattern is not None:
            text += f" matching {self.pattern}"
        if self.min is not None or self.max is not None:
            what = "" if self.type in (int, float) else " in length"
            lo = "-inf" if self.min is None else _num(self.min)
            hi = "inf" if self.max is None else _num(self.max)
            text += f" between {lo} and {hi}{what}"
        return text

    def clean(self, name: str, value: Any) -> Any:
        """The value to store for this field, or InvalidInput."""
        if not _type_ok(self.type, value):
            raise invalid(name, self.describe(), value)
        if self.type is int and not -2**63 <= value < 2**63:
            raise invalid(name, "an integer within 64 bits (SQLite's range)", value)
        if self.type in (list, dict) and not _json_safe(value):
            raise invalid(name, f"{self.describe()} of JSON values", value)
        if self.type is float:
            if not math.isfinite(value):
                raise invalid(name, "a finite number", value)
            value = float(value)
        size = value if self.type in (int, float) else len(value) if self.type in (str, list) else None
        if size is not None:
            if (self.min is not None and size < self.min) or (self.max is not None and size > self.max):
                raise invalid(name, self.describe(), value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise invalid(name, self.describe(), value)
        if self.choices is not None and value not in self.choices:
            raise invalid(name, self.describe(), value)
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as e:
                raise invalid(name, str(e) or self.describe(), value) from None
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _json_safe(value: Any, depth: int = 0) -> bool:
    """True for values JSON can hold (msgpack callers can also send bytes, NaN...)."""
    if depth > 32:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_safe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v, depth + 1) for k, v in value.items())
    return False


def _type_ok(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


class Schema:
    """Validates documents against a field spec and a cross-field hook.

    `strict` refuses fields not in the spec; a schema with no fields and
    `strict=False` stores any JSON object (the bare template's behaviour).
    """

    def __init__(self, fields: Mapping[str, Field], validate: Callable[[dict], dict | None] | None = None,
                 strict: bool = True):
        for name in fields:
            if not NAME_RE.match(name) or name in META_FIELDS:
                raise ValueError(f"bad field name {name!r} (reserved or not an identifier)")
        self.fields = dict(fields)
        self.strict = strict
        self._hook = validate

    def check_name(self, name: Any, where: str) -> str:
        """A field name usable in filters and ordering, or InvalidInput."""
        if name in META_FIELDS or name in self.fields:
            return name
        if not self.strict and isinstance(name, str) and NAME_RE.match(name):
            return name
        known = ", ".join([*META_FIELDS, *self.fields])
        raise invalid(where, f"a field name ({known})", name)

    def clean(self, data: Any) -> dict:
        """A validated copy of a whole document, or InvalidInput for the first bad field."""
        if not isinstance(data, dict):
            raise invalid("data", "an object of fields", data)
        out: dict = {}
        for name, value in data.items():
            if name in META_FIELDS:
                raise invalid(name, "no value here (the store sets it)", value)
            spec = self.fields.get(name)
            if spec is None:
                if self.strict:
                    raise invalid(name, "no such field (known: " + ", ".join(self.fields) + ")",
                                  show_got=False)
                if not isinstance(name, str) or not NAME_RE.match(name):
                    raise invalid(repr(name), "a field name made of letters, digits and _", show_got=False)
                if not _json_safe(value):
                    raise invalid(name, "a JSON value (text, numbers, booleans, lists, objects)", value)
                out[name] = value
                continue
            if value is None:
                continue  # null means absent; required fields are checked below
            out[name] = spec.clean(name, value)
        for name, spec in self.fields.items():
            if spec.required and name not in out:
                raise invalid(name, f"{spec.describe()} (required)", show_got=False)
        if self._hook is not None:
            replaced = self._hook(out)
            if replaced is not None:
                out = replaced
        return out
