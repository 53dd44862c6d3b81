"""A ticket's evidence pack: everything that supports it, as one JSON document, read from the
record (tickets, sightings, the warning SMS, the audit log, the chain, the appeal), never edited.

It holds both captures (camera, integrator when known, time taken and received, position, place,
image URL and SHA-256 when the camera sent one, and the image as fetched: ``image``), the distance and the interval between them, the
warning (its text, when the gateway accepted it and when the phone got it, the deadline), the
decision (reason, the rule it applied, who decided), the appeal (until when, how, and any appeal
filed), and the ticket's links in the ticket record with the notice's verification code. Phone
numbers are not in it. ``pipeline/tickets/notice.py`` prints it as the notice (PDF).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pipeline.cases import machine, reasons
from pipeline.cases.machine import Rules, Sighting
from pipeline.evidence import store as evidence_images
from pipeline.tickets import chain

PACK_VERSION = 1


@dataclass(frozen=True)
class Terms:
    """What a ticket's paperwork states besides its rows: the rules, the appeal deadlines, where to appeal."""

    timezone: ZoneInfo
    rules: Rules
    appeal_window: timedelta
    """How long after the ticket an appeal may be filed."""
    appeal_decision: timedelta
    """How long after an appeal is received its decision is due."""
    authority: str = "杭州城管"
    appeal_url: str | None = None
    """The driver page's appeal form, when the driver page is on (else appeals go by phone)."""
    phone: str = "12345"

    @classmethod
    def of(cls, settings) -> "Terms":
        return cls(ZoneInfo(settings.timezone), settings.rules, timedelta(days=settings.appeal_window_days),
                   timedelta(days=settings.appeal_decision_days), settings.sms_signature,
                   f"{settings.driver_base_url}/d/ticket" if settings.driver_page else None)

    def appeal_until(self, issued_at: datetime) -> datetime:
        return issued_at + self.appeal_window


RULES = {
    "still_there": ("a capture at the same place (within {m:g} m of the violation) taken no earlier than the "
                    "deadline minus {tol:g} s", "截止时间（容差{tol:g}秒）后在原地（距违停抓拍{m:g}米内）的抓拍"),
    "still_there_recheck": ("a capture at the same place (within {m:g} m) taken after the deadline, answering a "
                            "recheck request", "截止时间后应复拍请求在原地（{m:g}米内）的抓拍"),
    "ticketed_on_review": ("an officer's decision on review, with a capture at the same place (within {m:g} m) at "
                           "least one window after the violation and no departure in between",
                           "人工审核决定：违停后至少一个驶离时限、在原地（{m:g}米内）的抓拍，其间无驶离记录"),
}


def rule_for(reason: str, rules: Rules) -> dict:
    """The rule a ticket's reason applied, in English and Chinese."""
    parsed = reasons.parse(reason or "")
    key = parsed[0] if parsed else "unknown"
    en, zh = RULES.get(key, ("the case rules (pipeline/cases/machine.py)", "案件规则"))
    params = {"m": rules.same_place_m, "tol": rules.capture_tolerance.total_seconds()}
    return {"key": key, "en": en.format(**params), "zh": zh.format(**params)}


def _at(value, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(tz).isoformat()


def _sighting(e: dict) -> Sighting:
    return Sighting(e["event_id"], e["camera_id"], datetime.fromisoformat(e["taken_at"]), e["lat"], e["lon"],
                    e.get("place") or "", e.get("evidence_url"))


def _image(fetched: dict | None) -> dict | None:
    """The image as fetched (pipeline/evidence): state stored, pending, failed or mismatch, the reason
    it was not obtained, the SHA-256 of the bytes kept; None when the capture had no image URL."""
    if fetched is None:
        return None
    return {"state": fetched["state"], "reason": fetched["reason"], "sha256": fetched["sha256"] or fetched["got_sha256"]}


def _capture(role: str, e: dict, s: dict | None, tz: ZoneInfo, fetched: dict | None = None) -> dict:
    s = s or {}
    evidence = s.get("evidence") or {}
    return {"image": _image(fetched), "role": role, "event_id": e["event_id"], "camera_id": e["camera_id"],
            "integrator": e.get("integrator") or s.get("integrator"),
            "taken_at": _at(e["taken_at"], tz), "received_at": _at(s.get("received_at"), tz),
            "position": {"lat": e["lat"], "lon": e["lon"]}, "place": e.get("place") or s.get("place"),
            "image_url": e.get("evidence_url") or evidence.get("image_url"),
            "image_sha256": e.get("image_sha256") or evidence.get("sha256")}


async def sighting_of(conn, e: dict) -> dict | None:
    """The recorded sighting a piece of evidence names: by its integrator and event id (event ids are
    unique per integrator only); evidence from before sightings had an integrator, by camera and event id."""
    return await conn.fetchval(
        """SELECT to_jsonb(s) FROM sightings s
           WHERE s.event_id = $1 AND (s.integrator = $2 OR $2 IS NULL AND s.camera_id = $3) LIMIT 1""",
        e["event_id"], e.get("integrator") or None, e["camera_id"])


async def evidence_pack(conn, number: str, terms: Terms, now: datetime | None = None) -> dict | None:
    """The evidence pack of ticket ``number`` (None if there is no such ticket)."""
    tz = terms.timezone
    now = now or datetime.now(UTC)
    t = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1", number.strip().upper())
    if t is None:
        return None
    case = await conn.fetchrow("SELECT * FROM cases WHERE id = $1", t["case_id"])
    violation, fresh = t["evidence"][0], t["evidence"][-1]
    warning = await conn.fetchrow(
        "SELECT text, status, accepted_at, delivered_at FROM sms_messages WHERE case_id = $1 AND kind = 'warning'",
        t["case_id"])
    decided = await conn.fetchrow(
        """SELECT actor, at FROM audit_log WHERE case_id = $1 AND (action LIKE '%->ticketed' OR action = 'ticket_on_review')
           ORDER BY id LIMIT 1""", t["case_id"])
    links = await chain.links_of(conn, t["number"])
    fetched = await evidence_images.status_of(conn, t["case_id"], [violation["event_id"], fresh["event_id"]])
    appeal = await conn.fetchrow("SELECT * FROM appeals WHERE ticket_number = $1", t["number"])
    first, second = _sighting(violation), _sighting(fresh)
    issued_link = next((link for link in links if link["kind"] == "TicketIssued"), None)
    until = terms.appeal_until(t["issued_at"])
    return {
        "pack_version": PACK_VERSION,
        "generated_at": _at(now, tz),
        "ticket": {
            "number": t["number"], "plate": t["plate"], "case_id": str(t["case_id"]), "place": t["place"],
            "zone": t["zone"], "position": {"lat": t["lat"], "lon": t["lon"]}, "issued_at": _at(t["issued_at"], tz),
            "deadline_at": _at(t["deadline_at"], tz), "authority": terms.authority,
            "status": "voided" if t["voided_at"] else "standing", "voided_at": _at(t["voided_at"], tz),
            "void_reason": t["void_reason"],
        },
        "captures": [_capture("violation", violation, await sighting_of(conn, violation), tz,
                              fetched.get(violation["event_id"])),
                     _capture("still_there", fresh, await sighting_of(conn, fresh), tz, fetched.get(fresh["event_id"]))],
        "between": {"distance_m": round(machine.distance_m(first, second), 1),
                    "interval_seconds": round((second.taken_at - first.taken_at).total_seconds(), 1)},
        "warning": None if warning is None else {
            "text": warning["text"], "status": warning["status"],
            "accepted_at": _at(t["warning_accepted_at"] or warning["accepted_at"], tz),
            "delivered_at": _at(t["warning_delivered_at"] or warning["delivered_at"], tz),
            "deadline_at": _at(case["deadline_at"], tz),
            "window_seconds": case["window_seconds"]},
        "decision": {"reason": t["reason"] or case["reason"], "rule": rule_for(t["reason"] or case["reason"], terms.rules),
                     "decided_at": _at(decided["at"] if decided else case["closed_at"], tz),
                     "by": (decided["actor"] if decided["actor"].startswith("operator:") else "pipeline")
                     if decided else None},
        "appeal": {
            "until": _at(until, tz), "open": appeal is None and t["voided_at"] is None and now <= until,
            "how": {"url": terms.appeal_url, "phone": terms.phone},
            "filed": None if appeal is None else {
                "appeal_id": str(appeal["id"]), "ground": appeal["ground"], "channel": appeal["channel"],
                "received_at": _at(appeal["received_at"], tz), "due_at": _at(appeal["due_at"], tz),
                "outcome": appeal["outcome"], "decided_at": _at(appeal["decided_at"], tz),
                "reason": appeal["decision_reason"]},
        },
        "record": {
            "verification_code": chain.verification_code(issued_link["hash"]) if issued_link else None,
            "links": [{"seq": link["seq"], "kind": link["kind"], "prev": link["prev"], "hash": link["hash"]}
                      for link in links],
        },
    }
