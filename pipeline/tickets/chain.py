"""The ticket record: every ticket, void and appeal decision is a link in one SHA-256 hash chain.

A link's **record** is the message that publishes it (``TicketIssued``, ``TicketVoided``,
``AppealDecided``) restricted to the fields listed in ``RECORD_FIELDS``, as JSON, canonicalized
by RFC 8785 (the JSON Canonicalization Scheme): keys sorted, no whitespace, strings as JSON
with only ``"``, ``\\`` and control characters escaped (non-ASCII as UTF-8), numbers as
ECMAScript writes them (``120`` not ``120.0``). Its **hash** is::

    sha256(utf8('{"prev":"' + prev + '","record":' + canonical(record) + ',"seq":' + seq + '}'))

in lower-case hex: the canonical form of ``{"prev": prev, "record": record, "seq": seq}``, where
``prev`` is the previous link's hash (64 zeros before the first) and ``seq`` counts links from 1.

Appending (``append``) inserts the link without its place, in the transaction of the ticket,
void or decision it records; a deferred trigger (migration 0020) gives it its place at commit
under the chain head's row lock, and writes ``"chain": {"seq", "prev", "hash"}`` into the
outbox row that publishes it. Appends from any number of workers serialize for the length of a
commit only; the lock is taken after every other lock of the transaction, so it never waits
inside one that holds others (no deadlock).

``verify`` recomputes every link, and every record from the rows it records (tickets, appeals),
and names the first link that does not hold.
"""

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from pydantic import BaseModel

from schemas import events
from schemas.codec import encode

GENESIS = "0" * 64

RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "TicketIssued": ("type", "ticket_number", "case_id", "plate", "issued_at", "place", "zone", "location",
                     "deadline_at", "evidence", "reason", "warning_accepted_at", "warning_delivered_at"),
    "TicketVoided": ("type", "ticket_number", "case_id", "plate", "voided_at", "reason", "operator"),
    "AppealDecided": ("type", "appeal_id", "ticket_number", "case_id", "plate", "ground", "received_at",
                      "decided_at", "outcome", "reason", "officer"),
}
"""The fields of each message that its link records; a field whose value is null is left out (so
links from before a field was recorded verify as they were)."""


# ── the canonical form (RFC 8785) ───────────────────────────────────────────────────────────


def _number(x: float) -> str:
    """A number as ECMAScript's Number.prototype.toString writes it (RFC 8785, section 3.2.2.3)."""
    if isinstance(x, bool):
        raise TypeError("booleans are not numbers")
    if isinstance(x, int):
        if abs(x) > 2 ** 53:
            raise ValueError(f"integer {x} is beyond what JSON numbers hold exactly")
        return str(x)
    if not math.isfinite(x):
        raise ValueError(f"{x} has no JSON form")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    written = whole + fraction
    significant = written.lstrip("0")
    # value = 0.<digits> * 10**n (ECMAScript's n), from Python's shortest round-trip digits
    n = len(whole) + int(exponent or 0) - (len(written) - len(significant))
    digits = significant.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    tail = f"e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + (digits if k == 1 else digits[0] + "." + digits[1:]) + tail


def canonical(value) -> str:
    """``value`` (JSON data: dict, list, str, int, float, bool, None) in RFC 8785 canonical form."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("JSON object keys are strings")
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical(v) for k, v in items) + "}"
    raise TypeError(f"{type(value).__name__} is not JSON data")


def link_hash(seq: int, prev: str, body: str) -> str:
    """The hash of link ``seq`` whose record's canonical form is ``body`` (see the module docstring)."""
    wrapper = '{"prev":"' + prev + '","record":' + body + ',"seq":' + str(seq) + "}"
    return hashlib.sha256(wrapper.encode("utf-8")).hexdigest()


def record_of(message: BaseModel | dict) -> dict:
    """The record a message's link holds: its JSON, restricted to ``RECORD_FIELDS``."""
    data = json.loads(encode(message)) if isinstance(message, BaseModel) else message
    return {name: data[name] for name in RECORD_FIELDS[data["type"]] if data.get(name) is not None}


def verification_code(link_hash_hex: str) -> str:
    """The code printed on a notice: the first 16 hex digits of the ticket's link, in four groups."""
    head = link_hash_hex[:16].upper()
    return "-".join(head[i:i + 4] for i in range(0, 16, 4))


# ── the messages, from the rows they record ────────────────────────────────────────────────


def _utc(at: datetime | None) -> datetime | None:
    return at.astimezone(UTC) if at is not None else None


def issued_message(t) -> events.TicketIssued:
    """``TicketIssued`` for a ``tickets`` row (the same message at issue time and when verifying)."""
    return events.TicketIssued(
        ticket_number=t["number"], case_id=str(t["case_id"]), plate=t["plate"], issued_at=_utc(t["issued_at"]),
        place=t["place"], zone=t["zone"], location=events.Location(lat=t["lat"], lon=t["lon"]),
        deadline_at=_utc(t["deadline_at"]), evidence=list(t["evidence"]), reason=t.get("reason"),
        warning_accepted_at=_utc(t.get("warning_accepted_at")), warning_delivered_at=_utc(t.get("warning_delivered_at")))


def voided_message(t) -> events.TicketVoided:
    return events.TicketVoided(ticket_number=t["number"], case_id=str(t["case_id"]), plate=t["plate"],
                               voided_at=_utc(t["voided_at"]), reason=t["void_reason"], operator=t["voided_by"] or "")


def appeal_message(a) -> events.AppealDecided:
    return events.AppealDecided(
        appeal_id=str(a["id"]), ticket_number=a["ticket_number"], case_id=str(a["case_id"]), plate=a["plate"],
        ground=a["ground"], received_at=_utc(a["received_at"]), decided_at=_utc(a["decided_at"]),
        outcome=a["outcome"], reason=a["decision_reason"], officer=a["decided_by"])


# ── appending ───────────────────────────────────────────────────────────────────────────────


async def append(conn, topic: str, message: BaseModel, ticket_number: str, appeal_id=None) -> None:
    """Publish ``message`` (an outbox row, key: the plate) and append its link, in the caller's
    transaction; the link's place and hash are given at commit (see the module docstring)."""
    outbox_id = await conn.fetchval("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3) RETURNING id",
                                    topic, message.plate.encode(), message.model_dump_json(exclude={"chain"}).encode())
    await conn.execute(
        """INSERT INTO ticket_chain (kind, ticket_number, appeal_id, body, outbox_id)
           VALUES ($1, $2, $3, $4, $5)""",
        message.type, ticket_number, appeal_id, canonical(record_of(message)), outbox_id)


async def record_issued(conn, topic: str, number: str) -> None:
    """A ticket just issued (its row inserted in this transaction): publish it with its link."""
    row = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1", number)
    await append(conn, topic, issued_message(row), number)


async def void(conn, topic: str, number: str, reason: str, by: str, at: datetime) -> None:
    """Void a ticket (the caller holds its row, checked voidable), publish it and append its link."""
    row = await conn.fetchrow(
        "UPDATE tickets SET voided_at = $2, void_reason = $3, voided_by = $4 WHERE number = $1 RETURNING *",
        number, at, reason, by)
    await append(conn, topic, voided_message(row), number)


async def links_of(conn, number: str) -> list[dict]:
    """A ticket's links (issued, voided, appeal decided), in chain order."""
    return [dict(r) for r in await conn.fetch(
        "SELECT seq, kind, prev, hash, appended_at, appeal_id FROM ticket_chain WHERE ticket_number = $1 ORDER BY seq",
        number)]


# ── verifying ───────────────────────────────────────────────────────────────────────────────


@dataclass
class Verdict:
    """What ``verify`` found: ``broken`` names the first link that does not hold (None: intact)."""

    links: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    broken: str | None = None
    problems: list[str] = field(default_factory=list)
    before_chain: int = 0
    """Tickets issued before the chain began (migration 0020): they have no link."""

    @property
    def intact(self) -> bool:
        return not self.problems


def _differences(expected: dict, stored: dict) -> list[str]:
    keys = sorted(set(expected) | set(stored))
    return [k for k in keys if canonical(expected.get(k)) != canonical(stored.get(k))]


SOURCE_SQL = """
SELECT c.seq, c.kind, c.ticket_number, c.appeal_id, c.body, c.prev, c.hash,
       t.number, t.case_id, t.plate, t.issued_at, t.deadline_at, t.place, t.zone, t.lat, t.lon, t.evidence,
       t.voided_at, t.void_reason, t.voided_by, t.reason, t.warning_accepted_at, t.warning_delivered_at,
       a.id AS a_id, a.ticket_number AS a_ticket_number, a.case_id AS a_case_id, a.plate AS a_plate,
       a.ground AS a_ground, a.received_at AS a_received_at, a.decided_at AS a_decided_at,
       a.outcome AS a_outcome, a.decision_reason AS a_decision_reason, a.decided_by AS a_decided_by
FROM ticket_chain c
LEFT JOIN tickets t ON t.number = c.ticket_number
LEFT JOIN appeals a ON a.id = c.appeal_id
ORDER BY c.seq"""


def _recorded(row) -> tuple[dict | None, str]:
    """The record the rows hold now for a link, or None with why."""
    if row["number"] is None:
        return None, f"ticket {row['ticket_number']} is gone from the tickets table"
    if row["kind"] == "TicketIssued":
        return record_of(issued_message(row)), ""
    if row["kind"] == "TicketVoided":
        if row["voided_at"] is None:
            return None, f"ticket {row['ticket_number']} is no longer void"
        return record_of(voided_message(row)), ""
    if row["a_id"] is None:
        return None, f"appeal {row['appeal_id']} is gone from the appeals table"
    if row["a_decided_at"] is None:
        return None, f"appeal {row['appeal_id']} is no longer decided"
    return record_of(appeal_message({k[2:]: row[k] for k in row.keys() if k.startswith("a_")})), ""


def _check_link(row, expected_seq: int, prev: str) -> str | None:
    """Why link ``row`` does not hold (None: it does)."""
    seq = row["seq"]
    name = f"link {seq} ({row['kind']} {row['ticket_number']})"
    if seq != expected_seq:
        return f"link {expected_seq} is missing (the next link is {seq})"
    if row["prev"] != prev:
        return f"{name} does not follow link {seq - 1}: its prev is {row['prev'][:16]}…, link {seq - 1} is {prev[:16]}…"
    if link_hash(seq, row["prev"], row["body"]) != row["hash"]:
        return f"{name}: its hash does not match its record (the link was altered)"
    try:
        stored = json.loads(row["body"])
    except ValueError:
        return f"{name}: its record is not JSON"
    if canonical(stored) != row["body"]:
        return f"{name}: its record is not in canonical form"
    expected, missing = _recorded(row)
    if expected is None:
        return f"{name}: {missing}"
    changed = _differences(expected, stored)
    if changed:
        what = "ticket" if row["kind"] != "AppealDecided" else "appeal"
        return f"{name}: the stored {what} differs from its record ({', '.join(changed)})"
    return None


async def verify(conn: asyncpg.Connection) -> Verdict:
    """Recompute the whole chain and every record from its rows; name the first link that fails."""
    verdict = Verdict()
    prev, expected_seq = GENESIS, 1
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash, started_at FROM ticket_chain_head")
        async for row in conn.cursor(SOURCE_SQL, prefetch=500):
            problem = _check_link(row, expected_seq, prev)
            if problem:
                verdict.problems.append(problem)
                verdict.broken = verdict.broken or problem
            verdict.links += 1
            prev, expected_seq = row["hash"], row["seq"] + 1
        verdict.head_seq, verdict.head_hash = head["seq"], head["hash"]
        if (head["seq"], head["hash"]) != (expected_seq - 1, prev):
            verdict.problems.append(f"the chain head (link {head['seq']}, {head['hash'][:16]}…) is not the last link "
                                    f"({expected_seq - 1}, {prev[:16]}…)")
        unlinked = await conn.fetch(
            """SELECT t.number, k.kind FROM tickets t
               CROSS JOIN LATERAL (VALUES ('TicketIssued'), ('TicketVoided')) AS k(kind)
               WHERE t.issued_at >= $1 AND (k.kind = 'TicketIssued' OR t.voided_at IS NOT NULL)
                 AND NOT EXISTS (SELECT 1 FROM ticket_chain c WHERE c.ticket_number = t.number AND c.kind = k.kind)
               ORDER BY t.number, k.kind""", head["started_at"])
        verdict.problems += [f"ticket {r['number']} has no {r['kind']} link" for r in unlinked]
        undecided = await conn.fetch(
            """SELECT a.id, a.ticket_number FROM appeals a WHERE a.decided_at IS NOT NULL AND NOT EXISTS
               (SELECT 1 FROM ticket_chain c WHERE c.appeal_id = a.id)""")
        verdict.problems += [f"the decision on appeal {r['id']} ({r['ticket_number']}) has no link" for r in undecided]
        verdict.before_chain = await conn.fetchval("SELECT count(*) FROM tickets WHERE issued_at < $1",
                                                   head["started_at"])
    return verdict


# ── against the heads published on ``tickets`` ──────────────────────────────────────────────


@dataclass
class Comparison:
    """What ``compare_with_published`` found: ``problems`` in chain order (the first names the first
    difference); links matched, not yet published (still in the outbox), and older than the topic
    holds (Kafka's retention)."""

    matched: int = 0
    waiting: int = 0
    older: int = 0
    problems: list[str] = field(default_factory=list)


def published_link(message: dict) -> dict | None:
    """A message read from ``tickets`` as (seq, prev, hash, name), checked as a consumer would (its
    hash recomputed from its own record); None for a message without a link."""
    link = message.get("chain") if isinstance(message, dict) else None
    if not isinstance(link, dict) or message.get("type") not in RECORD_FIELDS:
        return None
    try:
        own = link_hash(int(link["seq"]), str(link["prev"]), canonical(record_of(message)))
    except (KeyError, TypeError, ValueError):
        own = None
    return {"seq": int(link["seq"]), "prev": link.get("prev"), "hash": link.get("hash"), "holds": own == link.get("hash"),
            "name": f"{message.get('type')} {message.get('ticket_number')}"}


async def compare_with_published(conn, published: list[dict]) -> Comparison:
    """Compare the database's links with those published on ``tickets`` (``published_link`` of each
    message): every link both hold must have the same place, previous link and hash. A chain
    re-sealed in the database (a record changed and every later hash recomputed) differs from the
    heads already published from the first changed link on."""
    found = Comparison()
    on_topic = {p["seq"]: p for p in published}
    first_on_topic = min(on_topic, default=None)
    links = await conn.fetch(
        """SELECT c.seq, c.kind, c.ticket_number, c.prev, c.hash, o.id IS NOT NULL AS in_outbox
           FROM ticket_chain c LEFT JOIN outbox o ON o.id = c.outbox_id
           WHERE c.seq IS NOT NULL ORDER BY c.seq""")
    for link in links:
        name = f"link {link['seq']} ({link['kind']} {link['ticket_number']})"
        p = on_topic.pop(link["seq"], None)
        if p is None:
            if link["in_outbox"]:
                found.waiting += 1
            elif first_on_topic is None or link["seq"] < first_on_topic:
                found.older += 1
            else:
                found.problems.append(f"{name} is not on the tickets topic (set aside? `parkwarden outbox list`)")
            continue
        if not p["holds"]:
            found.problems.append(f"{name}: the message published on tickets does not match its own link")
        elif (p["prev"], p["hash"]) != (link["prev"], link["hash"]):
            found.problems.append(f"{name}: the database's hash {link['hash'][:16]}… differs from the one published "
                                  f"on tickets ({p['hash'][:16]}…)" if p["hash"] != link["hash"] else
                                  f"{name}: its previous link in the database differs from the one published on tickets")
        else:
            found.matched += 1
    for seq in sorted(on_topic):
        found.problems.append(f"link {seq} ({on_topic[seq]['name']}) is published on tickets but not in the database")
    return found
