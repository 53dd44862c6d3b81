"""Zones (their warning window, exemptions) and whitelisted plates, held in memory."""

from dataclasses import dataclass, field

import asyncpg


@dataclass
class ZoneBook:
    default_window_seconds: float
    windows: dict[str, float] = field(default_factory=dict)
    exempt_zones: dict[str, str] = field(default_factory=dict)
    whitelist: dict[str, str] = field(default_factory=dict)

    def window_seconds(self, zone: str) -> float:
        return self.windows.get(zone) or self.default_window_seconds

    def exemption(self, plate: str, zone: str) -> str | None:
        """Why a violation by this plate in this zone is not pursued, or None."""
        if plate in self.whitelist:
            return f"whitelisted plate: {self.whitelist[plate]}"
        if zone in self.exempt_zones:
            return f"exempt zone: {self.exempt_zones[zone]}"
        return None


async def load_zones(pool: asyncpg.Pool, book: ZoneBook) -> None:
    zones = await pool.fetch("SELECT id, window_seconds, exempt_reason FROM zones")
    book.windows = {z["id"]: z["window_seconds"] for z in zones if z["window_seconds"]}
    book.exempt_zones = {z["id"]: z["exempt_reason"] for z in zones if z["exempt_reason"]}
    book.whitelist = {r["plate"]: r["reason"] for r in await pool.fetch("SELECT plate, reason FROM whitelisted_plates")}
