"""Zones (their warning window, exemptions, their own rules) and whitelisted plates, held in memory."""

from dataclasses import dataclass, field, replace
from datetime import timedelta

import asyncpg

from pipeline.cases.machine import ZoneRules
from pipeline.cases.reasons import why


@dataclass
class ZoneBook:
    default_window_seconds: float
    windows: dict[str, float] = field(default_factory=dict)
    exempt_zones: dict[str, str] = field(default_factory=dict)
    exempt_hours: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Zones exempt only from one local hour until another (wrapping midnight when from > until)."""
    whitelist: dict[str, str] = field(default_factory=dict)
    defaults: ZoneRules = ZoneRules()
    """The city's zone rules (``Settings.zone_defaults``), for what a zone does not set itself."""
    own_rules: dict[str, dict] = field(default_factory=dict)
    """Per zone, the rules it sets itself (first_offence_months, new_camera_days, confirm_tickets)."""

    def window_seconds(self, zone: str) -> float:
        return self.windows.get(zone) or self.default_window_seconds

    def rules_for(self, zone: str) -> ZoneRules:
        """A zone's rules for the case machine: its own where it has them, the city's otherwise."""
        return replace(self.defaults, window=timedelta(seconds=self.window_seconds(zone)),
                       **self.own_rules.get(zone, {}))

    def exemption(self, plate: str, zone: str, local_hour: int | None = None) -> str | None:
        """Why a violation by this plate in this zone (at this local hour) is not pursued, or None."""
        if plate in self.whitelist:
            return why("whitelisted", detail=self.whitelist[plate])
        if zone not in self.exempt_zones:
            return None
        hours = self.exempt_hours.get(zone)
        if hours is None:
            return why("exempt_zone", detail=self.exempt_zones[zone])
        start, until = hours
        inside = start <= local_hour < until if start < until else (local_hour >= start or local_hour < until)
        return why("exempt_hours", start=f"{start:02d}", until=f"{until:02d}", detail=self.exempt_zones[zone]) if inside else None


async def load_zones(pool: asyncpg.Pool, book: ZoneBook) -> None:
    # An exemption or a whitelist entry applies between its optional start and end, on PostgreSQL's clock.
    zones = await pool.fetch("""SELECT id, window_seconds, first_offence_months, new_camera_days, confirm_tickets,
                                       CASE WHEN (exempt_starts_at IS NULL OR exempt_starts_at <= now())
                                             AND (exempt_ends_at IS NULL OR exempt_ends_at > now())
                                            THEN exempt_reason END AS exempt_reason,
                                       exempt_from_hour, exempt_until_hour FROM zones""")
    book.windows = {z["id"]: z["window_seconds"] for z in zones if z["window_seconds"]}
    book.exempt_zones = {z["id"]: z["exempt_reason"] for z in zones if z["exempt_reason"]}
    book.exempt_hours = {z["id"]: (z["exempt_from_hour"], z["exempt_until_hour"])
                         for z in zones if z["exempt_reason"] and z["exempt_from_hour"] is not None}
    book.own_rules = {z["id"]: {k: z[k] for k in ("first_offence_months", "new_camera_days", "confirm_tickets")
                                if z[k] is not None} for z in zones}
    book.whitelist = {r["plate"]: r["reason"] for r in await pool.fetch(
        """SELECT plate, reason FROM whitelisted_plates
           WHERE (valid_from IS NULL OR valid_from <= now()) AND (valid_until IS NULL OR valid_until > now())""")}
