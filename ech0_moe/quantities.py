"""Numbers with units read from an answer, in one unit system, with the precision they were given.

"100 degrees Celsius" and "212 °F" are both 373.15 K; "about 8 minutes" (±30 s) holds
"roughly 8 min 20 s"; "3 x 10^8 m/s" holds "about 300,000 km per second". A value agrees with
another when they differ by at most half the coarser precision either answer stated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PAREN = re.compile(r"\([^)]*\)")
_APPROX = re.compile(r"\b(?:about|roughly|approximately|around|nearly|almost|some|circa)\b|~|≈", re.IGNORECASE)
_NUMBER = re.compile(
    r"(?<![\w.\-^])([-+−]?\d[\d,]*(?:\.\d+)?)(?:\s*(?:x|×|\*)\s*10\s*\^\s*([-+]?\d+))?([a-z](?![a-z]))?", re.IGNORECASE
)
_WORDS = re.compile(r"[a-z0-9]+")
_POWER = re.compile(r"(\d\s*[x×*]\s*)?(?<![\w.^])10\s*\^\s*\(?([-+]?\d+)\)?")  # "10^-24": 1 x 10^-24
WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}

_KELVIN = 273.15
_MILE, _FOOT, _HOUR, _YEAR = 1609.344, 0.3048, 3600.0, 365.25 * 86400


@dataclass(frozen=True)
class Unit:
    dimension: str  # what it measures, in its SI base unit ("m", "s", "K", "m/s", ...)
    factor: float  # SI value of 1 of this unit
    offset: float = 0.0  # added after scaling (temperatures)


def _units() -> dict[str, Unit]:
    table: dict[str, Unit] = {}

    def add(names: str, dimension: str, factor: float, offset: float = 0.0) -> None:
        for name in names.split("|"):
            table[name] = Unit(dimension, factor, offset)

    add("degrees celsius|degree celsius|celsius|°c|ºc|c", "K", 1.0, _KELVIN)
    add("degrees fahrenheit|degree fahrenheit|fahrenheit|°f|ºf|f", "K", 5 / 9, _KELVIN - 32 * 5 / 9)
    add("kelvins|kelvin|k", "K", 1.0)
    add("milliseconds|millisecond|ms", "s", 1e-3)
    add("seconds|second|secs|sec|s", "s", 1.0)
    add("minutes|minute|mins|min", "s", 60.0)
    add("hours|hour|hrs|hr|h", "s", _HOUR)
    add("days|day", "s", 86400.0)
    add("weeks|week", "s", 7 * 86400.0)
    add("years|year|yrs", "s", _YEAR)
    add("nanometres|nanometers|nm", "m", 1e-9)
    add("micrometres|micrometers|µm|μm", "m", 1e-6)
    add("millimetres|millimeters|mm", "m", 1e-3)
    add("centimetres|centimeters|cm", "m", 1e-2)
    add("metres|meters|metre|meter|m", "m", 1.0)
    add("kilometres|kilometers|kilometre|kilometer|km", "m", 1e3)
    add("inches|inch", "m", 0.0254)  # not "in": "the 4 in the tenths place"
    add("feet|foot|ft", "m", _FOOT)
    add("yards|yard|yd", "m", 0.9144)
    add("miles|mile|mi", "m", _MILE)
    add("light-years|light years|light-year|light year|ly", "m", 9.4607e15)
    add("metres per second|meters per second|m/s|m s^-1", "m/s", 1.0)
    add("kilometres per second|kilometers per second|km per second|km/s", "m/s", 1e3)
    add("kilometres per hour|kilometers per hour|km per hour|km/h|kph|kmh", "m/s", 1 / 3.6)
    add("miles per hour|mph|mi/h", "m/s", _MILE / _HOUR)
    add("feet per second|ft/s", "m/s", _FOOT)
    add("knots|knot|kn", "m/s", 1852 / _HOUR)
    add("milligrams|mg", "kg", 1e-6)
    add("grams|gram|g", "kg", 1e-3)
    add("kilograms|kilogram|kg", "kg", 1.0)
    add("tonnes|tonne|tons", "kg", 1e3)
    add("pounds|pound|lbs|lb", "kg", 0.45359237)
    add("degrees|degree|°", "°", 1.0)
    add("volts|volt|v", "V", 1.0)
    add("amperes|ampere|amps|amp|a", "A", 1.0)
    add("ohms|ohm|ω", "ohm", 1.0)
    add("newtons|newton|n", "N", 1.0)
    add("joules|joule|j", "J", 1.0)
    add("watts|watt|w", "W", 1.0)
    add("hertz|hz", "Hz", 1.0)
    add("bits|bit", "bit", 1.0)
    add("bytes|byte", "byte", 1.0)
    add("percent|per cent|%", "%", 1.0)
    return table


UNITS = _units()
_UNIT_RE = re.compile(
    r"\s*(" + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True)) + r")(?![a-z0-9/])",
    re.IGNORECASE,
)
_JOIN = re.compile(r"\s*(?:,|and)?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Quantity:
    value: float  # in the SI unit of `unit`
    unit: str  # the dimension's SI unit; "" for a bare number
    step: float  # the precision the answer gave, in the same unit: values within step / 2 agree
    term: str = ""  # "2x": a number glued to a symbol is compared as written
    written: tuple[float, float] = (0.0, 0.0)  # value and step as written, before any unit

    def agrees(self, other: Quantity) -> bool:
        if self.term or other.term:
            return self.term == other.term
        if self.unit and other.unit and self.unit != other.unit:
            return False
        if bool(self.unit) != bool(other.unit):  # "60" and "60 minutes": compared as written
            (x, dx), (y, dy) = self.written, other.written
        else:
            (x, dx), (y, dy) = (self.value, self.step), (other.value, other.step)
        return abs(x - y) <= max(dx, dy) / 2 + 1e-9 * abs(x)


def _step(digits: str, exponent: str | None, approx: bool) -> float:
    """The precision a number was written with ("3.14": 0.01; "about 300,000": 100,000)."""
    mantissa = digits.lstrip("+-−")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if exponent:
        return 10.0 ** (int(exponent) - decimals)
    if approx and not decimals:  # "about 300,000": the trailing zeros are not significant
        return 10.0 ** (len(mantissa) - len(mantissa.rstrip("0")))
    return 10.0**-decimals


def _scaled(value: float, step: float, unit: str | None) -> Quantity:
    if unit is None:
        return Quantity(value, "", step, written=(value, step))
    u = UNITS[unit.lower()]
    return Quantity(value * u.factor + u.offset, u.dimension, step * u.factor, written=(value, step))


def _merged(found: list[tuple[Quantity, int, int]], text: str) -> list[Quantity]:
    """'8 min 20 s', '5 ft 10 in', '2 hours and 15 minutes': one quantity each."""
    out: list[tuple[Quantity, int]] = []
    for q, start, end in found:
        if (
            out
            and q.unit
            and out[-1][0].unit == q.unit
            and q.unit in ("s", "m")
            and _JOIN.fullmatch(text[out[-1][1] : start])
        ):
            prev = out[-1][0]
            out[-1] = (Quantity(prev.value + q.value, q.unit, min(prev.step, q.step)), end)
        else:
            out.append((q, end))
    return [q for q, _ in out]


def quantities(text: str) -> list[Quantity]:
    """The quantities of the answer's first sentence (after its last "=", the result), in order."""
    body = _POWER.sub(
        lambda m: m.group() if m.group(1) else f"1 x 10^{m.group(2)}", _PAREN.sub(" ", text).replace("−", "-")
    )
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", body.strip())[0]
    if "=" in first:
        first = first.rsplit("=", 1)[1]
    approx = bool(_APPROX.search(first))
    found: list[tuple[Quantity, int, int]] = []
    for m in _NUMBER.finditer(first):
        digits, exponent, glued = m.group(1).replace(",", ""), m.group(2), m.group(3)
        if glued and not _UNIT_RE.fullmatch(glued):
            found.append((Quantity(0.0, "", 0.0, term=(digits + glued).lower()), m.start(), m.end()))
            continue
        value = float(digits) * (10 ** int(exponent) if exponent else 1)
        unit = _UNIT_RE.match(first, m.start(3) if glued else m.end())
        end = unit.end() if unit else m.end()
        found.append((_scaled(value, _step(digits, exponent, approx), unit.group(1) if unit else None), m.start(), end))
    if not found:
        lowered = first.lower()
        for w in _WORDS.finditer(lowered):
            if w.group() in WORD_NUMBERS:
                unit = _UNIT_RE.match(lowered, w.end())
                n = float(WORD_NUMBERS[w.group()])
                found.append((_scaled(n, 1.0, unit.group(1) if unit else None), w.start(), w.end()))
    return _merged(found, first)


def agree(a: list[Quantity], b: list[Quantity]) -> bool:
    """The final quantities agree, and so does every other one when both list the same count."""
    if not a[-1].agrees(b[-1]):
        return False
    return len(a) != len(b) or all(x.agrees(y) for x, y in zip(a, b, strict=True))
