"""Sorting and paging of the console's lists: the sort is a name from a whitelist (nothing typed
reaches the SQL), an unknown one is refused naming the parameter, pages are keyset with the id as
tie-break, and the links keep the filters and the order."""

from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.appeals import store as appeals
from pipeline.console import listing, queries
from pipeline.console.listing import BadParameter, Page, encode_cursor


def test_an_unknown_sort_key_or_direction_is_refused_naming_the_parameter():
    with pytest.raises(BadParameter) as refused:
        queries.TICKETS.order({"sort": "issued_at; DROP TABLE tickets"})
    assert refused.value.parameter == "sort" and str(refused.value).startswith("sort: ")
    assert "issued_at" in str(refused.value) and "DROP" not in str(refused.value)
    with pytest.raises(BadParameter) as refused:
        queries.CASES.order({"sort": "plate", "dir": "sideways"})
    assert refused.value.parameter == "dir"
    with pytest.raises(BadParameter) as refused:
        appeals.DECIDED.order({"decided_sort": "statement"})
    assert refused.value.parameter == "decided_sort", "the decided list's own parameter is named"
    for bad in ("not base64!", encode_cursor("x", "y")[:-3] + "@@@", "WzEsMl0"):  # the last: [1,2], not strings
        with pytest.raises(BadParameter) as refused:
            queries.AUDIT.order({"after": bad})
        assert refused.value.parameter == "after"


def test_the_sql_is_built_from_the_whitelist_only_and_ends_with_the_id():
    order = queries.TICKETS.order({"sort": "plate", "dir": "desc"})
    args: list = ["zone-a"]
    condition, order_by = order.keyset(args)
    assert condition == "true" and args == ["zone-a"]
    assert order_by == "t.plate DESC, t.number DESC", "ties broken by the ticket number, in the same direction"

    cursor = encode_cursor("浙A12345", "YH261126000042")
    order = queries.TICKETS.order({"sort": "plate", "dir": "desc", "after": cursor})
    condition, order_by = order.keyset(args)
    assert condition == "((t.plate), (t.number)) < ($2::text::text, $3::text::text)"
    assert args == ["zone-a", "浙A12345", "YH261126000042"], "the cursor's values are parameters, never SQL text"

    # A previous page is read backwards, then turned round.
    order = queries.CASES.order({"before": encode_cursor("2026-12-07 10:00:00+00", "00000000-0000-0000-0000-000000000001")})
    args = []
    condition, order_by = order.keyset(args)
    assert condition == "((c.detected_at), (c.id)) > ($1::text::timestamptz, $2::text::uuid)"
    assert order_by == "c.detected_at ASC, c.id ASC"


def test_the_default_order_is_the_lists_own():
    assert (queries.CASES.order({}).key, queries.CASES.order({}).desc) == ("detected_at", True)
    assert (appeals.OPEN.order({}).key, appeals.OPEN.order({}).desc) == ("due_at", False), "soonest due first"
    assert queries.AUDIT.order({"dir": "asc"}).desc is False
    assert queries.TICKETS.order({"sort": "zone"}).desc is False, "another column: ascending unless asked"


def rows(*pairs):
    return [{"number": tie, "_sort": sort, "_tie": tie} for sort, tie in pairs]


def test_a_page_knows_its_neighbours_and_reads_backwards_in_order():
    order = queries.TICKETS.order({})
    first = Page.of(rows(("b", "3"), ("b", "2"), ("a", "1")), order, 2)
    assert [r["number"] for r in first.rows] == ["3", "2"] and "_sort" not in first.rows[0]
    assert first.before is None and first.after == encode_cursor("b", "2")

    second = Page.of(rows(("a", "1")), queries.TICKETS.order({"after": first.after}), 2)
    assert second.after is None and second.before == encode_cursor("a", "1")

    # Back from the second page: rows come in reverse (nearest first) and are turned round.
    back = Page.of(rows(("b", "2"), ("b", "3")), queries.TICKETS.order({"before": second.before}), 2)
    assert [r["number"] for r in back.rows] == ["3", "2"]
    assert back.before is None, "no row before: this is the first page"
    assert back.after == encode_cursor("b", "2")


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_links_keep_the_filters_and_the_order_and_a_header_toggles_the_direction():
    order = queries.TICKETS.order({"sort": "plate", "dir": "asc"})
    page = Page.of(rows(("浙A1", "1"), ("浙A2", "2"), ("浙A3", "3")), order, 2)
    links = listing.Links("/console/tickets", {"zone": "yuhang", "status": "voided"}, page)
    assert query_of(links.next()) == {"zone": "yuhang", "status": "voided", "sort": "plate", "dir": "asc",
                                      "after": encode_cursor("浙A2", "2")}
    assert query_of(links.csv()) == {"zone": "yuhang", "status": "voided", "sort": "plate", "dir": "asc", "format": "csv"}
    assert query_of(links.sort("plate"))["dir"] == "desc" and "after" not in query_of(links.sort("plate"))
    assert query_of(links.sort("zone")) == {"zone": "yuhang", "status": "voided", "sort": "zone", "dir": "asc"}
    assert links.aria("plate") == "ascending" and links.aria("zone") == "none" and links.arrow("plate") == " ▲"
    assert links.prev() is None

    # Two lists on one page: each keeps the other's order in its links.
    decided = appeals.DECIDED.order({"decided_sort": "outcome", "decided_dir": "asc"})
    keep = {"ground": "other", **decided.params()}
    open_links = listing.Links("/console/appeals", keep, Page.of([], appeals.OPEN.order({}), 2))
    assert query_of(open_links.sort("plate")) == {"ground": "other", "decided_sort": "outcome", "decided_dir": "asc",
                                                  "sort": "plate", "dir": "asc"}
