"""GCJ-02 -> WGS-84, for positions taken from Chinese map SDKs.

Maps published in China (AMap/Gaode, Tencent, the web maps built on them) show positions in
GCJ-02, WGS-84 shifted by a deliberately obfuscated, position-dependent offset of a few hundred
metres. parkwarden measures distances ("at the same place" is 50 m) in WGS-84, so a GCJ-02 position
must be converted before it is compared with anything. ``gcj02_to_wgs84`` inverts the public
forward transform numerically to within 1e-9 degrees (about 0.1 mm), far below the transform's own
accuracy (about 1 m).

GCJ-02 is only defined inside China's bounding box (``in_china``); outside it there is nothing to
convert and an input claiming GCJ-02 there is refused by ``schemas.events.Location``.
"""

import math

_A = 6378245.0  # semi-major axis of Krasovsky 1940, used by the transform
_EE = 0.00669342162296594323  # its first eccentricity squared


def in_china(lat: float, lon: float) -> bool:
    """The transform's own coarse bounding box (the one every implementation uses)."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def _offset(lat: float, lon: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
            + (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
            + (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
            + (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
            + (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
            + (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """The public forward transform (what a Chinese map shows for a GPS position)."""
    if not in_china(lat, lon):
        return lat, lon
    dlat, dlon = _offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """The WGS-84 position whose GCJ-02 form is (lat, lon), found by fixed-point iteration."""
    if not in_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(30):
        glat, glon = wgs84_to_gcj02(wlat, wlon)
        dlat, dlon = glat - lat, glon - lon
        wlat, wlon = wlat - dlat, wlon - dlon
        if abs(dlat) < 1e-10 and abs(dlon) < 1e-10:
            break
    return wlat, wlon
