"""The `list` request: filters, ordering and pagination, parsed and turned into SQL.

Filters compare one field with a value (`{"year": {"gte": 1990}}`, or a bare value
for equality). Ordering is one field, `"-field"` for descending, with insertion
order breaking ties so every order is total and pages never skip or repeat a row.
Pages use either `offset` or an opaque `cursor` (keyset: the sort key of the last
row returned), which stays correct while rows are added or removed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .schema import TYPE_NAMES, Schema, invalid

OPS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "IN", "prefix": "prefix"}
META_COLUMNS = {"id": str, "version": int, "created_at": int, "updated_at": int}
MAX_IN = 100
INT64_MAX = 2**63 - 1
LIST_KEYS = {"where", "order", "limit", "cursor", "offset"}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Query:
    where: tuple[Condition, ...] = ()
    order: str = ""  # "" = insertion order
    descending: bool = False
    limit: int = 50
    offset: int = 0
    after: tuple | None = None  # sort key of the last row of the previous page


def column(field: str) -> str:
    """The SQL expression of a field (names were checked against NAME_RE)."""
    if field in META_COLUMNS:
        return field
    return f"json_extract(data, '$.{field}')"


def sort_key_sql(order: str) -> list[str]:
    """The expressions of the total sort key for an order field."""
    if not order:
        return ["seq"]
    if order in META_COLUMNS:
        return [order, "seq"]
    expr = column(order)
    # Nulls last ascending; coalesce keeps row-value comparisons defined, and it
    # never mixes with real values because the IS NULL flag sorts first.
    return [f"({expr} IS NULL)", f"coalesce({expr}, 0)", "seq"]


def parse_list(params: Any, schema: Schema, default_limit: int, max_limit: int) -> Query:
    """A Query from a `list` request, or InvalidInput naming the bad part."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid("request", "an object with where, order, limit, cursor or offset", params)
    extra = set(params) - LIST_KEYS
    if extra:
        raise invalid(sorted(map(str, extra))[0], "no such list option (known: " + ", ".join(sorted(LIST_KEYS)) + ")",
                      show_got=False)
    where = _parse_where(params.get("where"), schema)
    order, descending = _parse_order(params.get("order"), schema)
    limit = params.get("limit", default_limit)
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        raise invalid("limit", f"an integer from 1 to {max_limit}", limit)
    offset = params.get("offset", 0)
    if not _is_int(offset) or not 0 <= offset <= INT64_MAX:
        raise invalid("offset", "an integer >= 0", offset)
    after = None
    if params.get("cursor") is not None:
        if offset:
            raise invalid("cursor", "no cursor together with an offset (use one or the other)", show_got=False)
        after = decode_cursor(params["cursor"], order, descending)
    return Query(where, order, descending, limit, offset, after)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_order(order: Any, schema: Schema) -> tuple[str, bool]:
    if order is None or order == "":
        return "", False
    if not isinstance(order, str):
        raise invalid("order", "a field name, with a leading '-' for descending", order)
    descending = order.startswith("-")
    name = schema.check_name(order[1:] if descending else order, "order")
    _refuse_container(name, schema, "order")
    return name, descending


def _refuse_container(name: str, schema: Schema, where: str) -> None:
    spec = schema.fields.get(name)
    if spec is not None and spec.type in (list, dict):
        raise invalid(where, "a field holding a string, number or boolean", name)


def _parse_where(where: Any, schema: Schema) -> tuple[Condition, ...]:
    if where is None:
        return ()
    if not isinstance(where, dict):
        raise invalid("where", "an object of field: value or field: {op: value}", where)
    out = []
    for name, test in where.items():
        name = schema.check_name(name, "where")
        _refuse_container(name, schema, f"where.{name}")
        tests = test if isinstance(test, dict) else {"eq": test}
        if not tests:
            raise invalid(f"where.{name}", "at least one operator (" + ", ".join(OPS) + ")", test)
        for op, value in tests.items():
            if op not in OPS:
                raise invalid(f"where.{name}", "an operator among " + ", ".join(OPS), op)
            out.append(Condition(name, op, _filter_value(name, op, value, schema)))
    return tuple(out)


def _filter_value(name: str, op: str, value: Any, schema: Schema) -> Any:
    where = f"where.{name}.{op}"
    kind = META_COLUMNS.get(name) or (schema.fields[name].type if name in schema.fields else None)
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN:
            raise invalid(where, f"a list of 1 to {MAX_IN} values", value)
        return tuple(_scalar(where, kind, v) for v in value)
    if op == "prefix":
        if not isinstance(value, str):
            raise invalid(where, "a string", value)
        return value
    if value is None and op in ("eq", "ne"):
        return None
    return _scalar(where, kind, value)


def _scalar(where: str, kind: type | None, value: Any) -> Any:
    if kind is None:  # undeclared field of a non-strict schema
        if value is None or isinstance(value, (dict, list)):
            raise invalid(where, "a string, number or boolean", value)
        return _bindable(where, value)
    ok = isinstance(value, bool) if kind is bool else (
        isinstance(value, (int, float)) and not isinstance(value, bool) if kind in (int, float)
        else isinstance(value, kind))
    if not ok:
        raise invalid(where, f"{TYPE_NAMES.get(kind, kind.__name__)} to compare with", value)
    return _bindable(where, value)


def _bindable(where: str, value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract gives 1/0 for JSON booleans
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise invalid(where, "an integer within 64 bits (SQLite's range)", value)
    return value


def where_sql(conditions: tuple[Condition, ...]) -> tuple[str, list]:
    """The WHERE clause text (may be empty) and its parameters."""
    parts: list[str] = []
    args: list = []
    for c in conditions:
        expr = column(c.field)
        if c.value is None:
            parts.append(f"{expr} IS {'NOT ' if c.op == 'ne' else ''}NULL")
        elif c.op == "in":
            parts.append(f"{expr} IN ({', '.join('?' * len(c.value))})")
            args.extend(c.value)
        elif c.op == "prefix":
            # substr, not LIKE: no wildcard escaping, and case-sensitive as '=' is.
            parts.append(f"substr({expr}, 1, ?) = ?")
            args.extend([len(c.value), c.value])
        else:
            parts.append(f"{expr} {OPS[c.op]} ?")
            args.append(c.value)
    return " AND ".join(parts), args


def encode_cursor(query: Query, key: tuple) -> str:
    """An opaque cursor for the page after the row whose sort key is `key`."""
    body = json.dumps({"o": query.order, "d": query.descending, "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(cursor: Any, order: str, descending: bool) -> tuple:
    expected = "a cursor returned by an earlier list call with the same order"
    if not isinstance(cursor, str) or len(cursor) > 2048:
        raise invalid("cursor", expected, cursor)
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise invalid("cursor", expected, cursor) from None
    width = len(sort_key_sql(order))
    if (not isinstance(body, dict) or body.get("o") != order or body.get("d") is not descending
            or not isinstance(body.get("k"), list) or len(body["k"]) != width
            or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in body["k"])):
        raise invalid("cursor", expected, cursor)
    return tuple(body["k"])


__all__ = ["Condition", "Query", "parse_list", "where_sql", "sort_key_sql", "column",
           "encode_cursor", "decode_cursor"]
