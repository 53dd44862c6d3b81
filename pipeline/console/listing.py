"""Sorting and paging of the console's lists (cases, tickets, appeals, the audit log).

A list names its sortable columns, each mapped to a SQL expression written here: the request only
picks one of the names (``sort``) and a direction (``dir``), so nothing a user types reaches the
statement's text. An unknown name or direction is refused naming the parameter (``BadParameter``,
a 400 in the views).

Pages are read by keyset, not by offset: a page's link carries the last row's sort value and its
id (``after``, or ``before`` for the previous page), and the next page starts strictly after that
pair. Every order ends with the list's unique key (``tie``), so rows with equal sort values keep one
order and no row is repeated or skipped between pages, even while new rows arrive; reading page
1,000 costs what reading page 1 does (with an index on the sort column and the key).
"""

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode


class BadParameter(ValueError):
    """A list's query parameter that is not one it knows; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class Column:
    """A sortable column: a SQL expression that is never NULL (coalesce it), and its SQL type (to
    read a cursor's value back)."""

    sql: str
    type: str


@dataclass(frozen=True)
class Listing:
    """A list's sortable columns by name, its default order, and its unique key ``tie``. ``prefix``
    names its query parameters (``{prefix}sort``, ...) when a page shows two lists."""

    columns: Mapping[str, Column]
    default: str
    default_desc: bool
    tie: Column
    prefix: str = ""

    def param(self, name: str) -> str:
        return self.prefix + name

    def order(self, query: Mapping[str, str]) -> "Order":
        """The order and page a request asks for (``sort``, ``dir``, ``after``, ``before``)."""
        key = query.get(self.param("sort"), "") or self.default
        if key not in self.columns:
            raise BadParameter(self.param("sort"), "not a column of this list; one of " + ", ".join(self.columns))
        direction = query.get(self.param("dir"), "")
        if direction not in ("", "asc", "desc"):
            raise BadParameter(self.param("dir"), "asc or desc")
        desc = self.default_desc if not direction and key == self.default else direction == "desc"
        after, before = (decode_cursor(self.param(p), query.get(self.param(p), "")) for p in ("after", "before"))
        if after and before:
            raise BadParameter(self.param("before"), "give after or before, not both")
        return Order(self, key, desc, after, before)


@dataclass(frozen=True)
class Order:
    """A list's order and where its page starts."""

    listing: Listing
    key: str
    desc: bool
    after: tuple[str, str] | None = None
    before: tuple[str, str] | None = None

    @property
    def column(self) -> Column:
        return self.listing.columns[self.key]

    @property
    def select(self) -> str:
        """Columns to add to the SELECT list: each row's cursor values."""
        return f"({self.column.sql})::text AS _sort, ({self.listing.tie.sql})::text AS _tie"

    def keyset(self, args: list) -> tuple[str, str]:
        """(a condition for the WHERE clause, the ORDER BY list) of this page; the cursor's values are
        appended to ``args`` as parameters. A previous page (``before``) is read backwards:
        ``Page.of`` turns it round."""
        col, tie = self.column, self.listing.tie
        desc = self.desc != (self.before is not None)
        condition = "true"
        cursor = self.before or self.after
        if cursor:
            args.extend(cursor)
            op = "<" if desc else ">"
            condition = (f"(({col.sql}), ({tie.sql})) {op} "
                         f"(${len(args) - 1}::text::{col.type}, ${len(args)}::text::{tie.type})")
        direction = "DESC" if desc else "ASC"
        return condition, f"{col.sql} {direction}, {tie.sql} {direction}"

    def first(self) -> "Order":
        """The same order from its first row (an export, a fresh sort)."""
        return replace(self, after=None, before=None)

    def params(self) -> dict[str, str]:
        """This order as query parameters (the default order as none)."""
        p = self.listing.param
        out = {}
        if self.key != self.listing.default or self.desc != self.listing.default_desc:
            out = {p("sort"): self.key, p("dir"): "desc" if self.desc else "asc"}
        if self.after:
            out[p("after")] = encode_cursor(*self.after)
        if self.before:
            out[p("before")] = encode_cursor(*self.before)
        return out


def encode_cursor(sort_value: str, tie_value: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort_value, tie_value], ensure_ascii=False).encode()).decode().rstrip("=")


def decode_cursor(parameter: str, text: str) -> tuple[str, str] | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise BadParameter(parameter, "not a page of this list") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadParameter(parameter, "not a page of this list")
    return value[0], value[1]


@dataclass
class Page:
    """One page of a list: its rows in order, and the cursors of the pages before and after it."""

    rows: list[dict]
    order: Order
    after: str | None = None
    """The next page's cursor, when there is one."""
    before: str | None = None
    """The previous page's cursor, when there is one."""

    @classmethod
    def of(cls, rows: list, order: Order, size: int) -> "Page":
        """The page from rows read with ``Order.keyset`` and ``LIMIT size + 1``."""
        more = len(rows) > size
        rows = [dict(r) for r in rows[:size]]
        backwards = order.before is not None
        if backwards:
            rows.reverse()
        has_next = True if backwards else more
        has_prev = more if backwards else order.after is not None
        page = cls([{k: v for k, v in r.items() if k not in ("_sort", "_tie")} for r in rows], order)
        if rows and has_next:
            page.after = encode_cursor(rows[-1]["_sort"], rows[-1]["_tie"])
        if rows and has_prev:
            page.before = encode_cursor(rows[0]["_sort"], rows[0]["_tie"])
        return page


@dataclass
class Links:
    """The links of a list's page: sort by a column (asc, then desc), the next and previous pages, the
    first page and the CSV export, each keeping the filters (``keep``) and the order."""

    path: str
    keep: Mapping[str, str]
    page: Page

    def _href(self, params: dict) -> str:
        query = urlencode({k: v for k, v in {**self.keep, **params}.items() if v})
        return f"{self.path}?{query}" if query else self.path

    def sort(self, key: str) -> str:
        order = self.page.order
        p = order.listing.param
        desc = not order.desc if key == order.key else key == order.listing.default and order.listing.default_desc
        return self._href({p("sort"): key, p("dir"): "desc" if desc else "asc"})

    def aria(self, key: str) -> str:
        order = self.page.order
        return ("descending" if order.desc else "ascending") if key == order.key else "none"

    def arrow(self, key: str) -> str:
        order = self.page.order
        return (" ▼" if order.desc else " ▲") if key == order.key else ""

    def next(self) -> str | None:
        return self._href({**self.page.order.first().params(), self.page.order.listing.param("after"): self.page.after}) \
            if self.page.after else None

    def prev(self) -> str | None:
        return self._href({**self.page.order.first().params(), self.page.order.listing.param("before"): self.page.before}) \
            if self.page.before else None

    def first(self) -> str:
        return self._href(self.page.order.first().params())

    def csv(self) -> str:
        return self._href({**self.page.order.first().params(), "format": "csv"})
