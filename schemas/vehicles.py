"""The code lists the registries and camera events use: plate types (号牌种类), plate colours and
vehicle colours (车身颜色).

Plate types follow GA 24.7 (机动车号牌种类代码), the two-digit code the traffic police's registry
keys a plate with; the same number may be registered under two types (a small car's blue plate and
a trailer's yellow one, say). Vehicle colours follow GA 24.8 (机动车车身颜色代码), one letter.
"""

from typing import NamedTuple


class PlateType(NamedTuple):
    code: str
    zh: str
    en: str
    plate_colour: str
    """The plate's background colour, as a camera reads it: blue, yellow, black, white, green, yellow-green."""


PLATE_TYPES: dict[str, PlateType] = {t.code: t for t in (
    PlateType("01", "大型汽车", "large vehicle", "yellow"),
    PlateType("02", "小型汽车", "small car", "blue"),
    PlateType("03", "使馆汽车", "embassy vehicle", "black"),
    PlateType("04", "领馆汽车", "consulate vehicle", "black"),
    PlateType("05", "境外汽车", "foreign vehicle (cross-border)", "black"),
    PlateType("06", "外籍汽车", "foreign-owned vehicle", "black"),
    PlateType("07", "普通摩托车", "motorcycle", "yellow"),
    PlateType("08", "轻便摩托车", "moped", "blue"),
    PlateType("13", "低速车", "low-speed vehicle", "yellow"),
    PlateType("15", "挂车", "trailer", "yellow"),
    PlateType("16", "教练汽车", "driving-school car", "yellow"),
    PlateType("20", "临时入境汽车", "temporary entry vehicle", "white"),
    PlateType("22", "临时行驶车", "temporary plate", "white"),
    PlateType("23", "警用汽车", "police vehicle", "white"),
    PlateType("24", "警用摩托", "police motorcycle", "white"),
    PlateType("26", "香港入出境车", "Hong Kong cross-border vehicle", "black"),
    PlateType("27", "澳门入出境车", "Macao cross-border vehicle", "black"),
    PlateType("31", "武警号牌", "armed police vehicle", "white"),
    PlateType("32", "军队号牌", "military vehicle", "white"),
    PlateType("51", "大型新能源汽车", "large new-energy vehicle", "yellow-green"),
    PlateType("52", "小型新能源汽车", "small new-energy car", "green"),
    PlateType("99", "其他号牌", "other", "other"),
)}

DEFAULT_PLATE_TYPE = "02"
"""What a registry row without a type is (every row from before the type was kept: a small car)."""


class VehicleColour(NamedTuple):
    code: str
    zh: str
    en: str


VEHICLE_COLOURS: dict[str, VehicleColour] = {c.code: c for c in (
    VehicleColour("A", "白", "white"),
    VehicleColour("B", "灰", "grey"),
    VehicleColour("C", "黄", "yellow"),
    VehicleColour("D", "粉", "pink"),
    VehicleColour("E", "红", "red"),
    VehicleColour("F", "紫", "purple"),
    VehicleColour("G", "绿", "green"),
    VehicleColour("H", "蓝", "blue"),
    VehicleColour("I", "棕", "brown"),
    VehicleColour("J", "黑", "black"),
    VehicleColour("Z", "其他", "other"),
)}


def plate_type_problem(code: str) -> str | None:
    """Why ``code`` is not a plate type, or None when it is one (a GA 24.7 code of ``PLATE_TYPES``)."""
    if code in PLATE_TYPES:
        return None
    return (f"unknown plate type {code[:8]!r}: a GA 24.7 code such as 02 (small car), 01 (large vehicle) or "
            "52 (small new-energy car); docs/integrators.md lists them")


def plate_types_of_colour(plate_colour: str) -> list[str]:
    """The plate types whose plates have this background colour (a camera that reads only the colour)."""
    return [t.code for t in PLATE_TYPES.values() if t.plate_colour == plate_colour]


PLATE_COLOURS = ("blue", "yellow", "black", "white", "green", "yellow-green")
"""The plate background colours a camera may read (``plate_colour`` in camera events)."""
