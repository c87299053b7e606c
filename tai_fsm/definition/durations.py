"""Durations as written in machine definitions: ``30s``, ``5m``, ``2h``, ``1d``, ``1w``,
``500ms``, combinations such as ``1h30m``, or a plain number of seconds (``90``, ``"90"``,
``1.5``).

:func:`parse_duration` is strict: anything else raises :class:`~tai_fsm.errors.InvalidInput`
naming the accepted forms. :func:`format_duration` is its inverse for display
(``format_duration(parse_duration("90m")) == "1h30m"``).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from tai_fsm.errors import InvalidInput

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

_UNITS: dict[str, timedelta] = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

#: The accepted text forms as one regular expression (also used by the JSON Schema).
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d|w))+)\s*$"

#: Larger than any sensible timer and safely inside ``timedelta``'s range.
_MAX = timedelta(days=365 * 100)

_HELP = "use a number of seconds or units like '30s', '5m', '2h', '1d', '1h30m'"


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``value`` as a non-negative ``timedelta``.

    Accepts a ``timedelta`` (returned unchanged if non-negative), a non-negative int/float
    of seconds, or text: a plain number of seconds or one or more ``<number><unit>`` parts
    with units ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (``1h30m``). Booleans, negative or
    non-finite numbers, durations over 100 years and any other text raise ``InvalidInput``.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise InvalidInput(f"invalid duration {value!r}; {_HELP}", field="duration", value=value)
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInput(
                f"invalid duration {value!r}; {_HELP}", field="duration", value=value
            )
        result = _seconds(float(value), value)
    elif isinstance(value, str):
        result = _parse_text(value)
    else:
        raise InvalidInput(
            f"invalid duration {value!r} (a {type(value).__name__}); {_HELP}",
            field="duration",
            value=value,
        )
    if result < timedelta(0):
        raise InvalidInput(
            f"duration {value!r} is negative; {_HELP}", field="duration", value=value
        )
    if result > _MAX:
        raise InvalidInput(
            f"duration {value!r} is longer than 100 years", field="duration", value=value
        )
    return result


def _seconds(seconds: float, original: object) -> timedelta:
    if seconds < 0:
        raise InvalidInput(
            f"duration {original!r} is negative; {_HELP}", field="duration", value=original
        )
    if seconds > _MAX.total_seconds():
        raise InvalidInput(
            f"duration {original!r} is longer than 100 years", field="duration", value=original
        )
    return timedelta(seconds=seconds)


def _parse_text(text: str) -> timedelta:
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return _seconds(float(stripped), text)
    total = timedelta(0)
    position = 0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        amount = float(match.group(1))
        if amount > _MAX / _UNITS[match.group(2)]:
            raise InvalidInput(
                f"duration {text!r} is longer than 100 years", field="duration", value=text
            )
        total += _UNITS[match.group(2)] * amount
        position = match.end()
    if position == 0 or position != len(stripped):
        raise InvalidInput(f"invalid duration {text!r}; {_HELP}", field="duration", value=text)
    return total


def format_duration(value: timedelta) -> str:
    """A compact text form that :func:`parse_duration` reads back to the same value:
    ``1d2h``, ``30m``, ``1m30s``, ``250ms``; ``0s`` for zero."""
    if value < timedelta(0):
        raise InvalidInput(f"cannot format negative duration {value}", field="duration")
    micros = value // timedelta(microseconds=1)
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = _UNITS[unit] // timedelta(microseconds=1)
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        # Sub-millisecond remainder: fall back to fractional seconds for exactness.
        return f"{value.total_seconds():g}s" if value.total_seconds() else "0s"
    return "".join(parts) or "0s"
