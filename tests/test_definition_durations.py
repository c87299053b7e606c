"""Durations: 30s, 5m, 2h, 1d, combinations, plain seconds; clear errors otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tai_fsm.definition.durations import format_duration, parse_duration
from tai_fsm.errors import InvalidInput


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1.5h", timedelta(minutes=90)),
        ("90", timedelta(seconds=90)),
        (" 45 ", timedelta(seconds=45)),
        ("0s", timedelta(0)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse(text: str | int | float | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "invalid duration ''; use a number of seconds or units like '30s', '5m', '2h', "
             "'1d', '1h30m'"),
        ("5 minutes", "invalid duration '5 minutes'; use a number of seconds or units like "
                      "'30s', '5m', '2h', '1d', '1h30m'"),
        ("m5", "invalid duration 'm5'; use a number of seconds or units like '30s', '5m', "
               "'2h', '1d', '1h30m'"),
        ("1h 30m", "invalid duration '1h 30m'; use a number of seconds or units like '30s', "
                   "'5m', '2h', '1d', '1h30m'"),
        ("-5m", "invalid duration '-5m'; use a number of seconds or units like '30s', '5m', "
                "'2h', '1d', '1h30m'"),
        (-1, "duration -1 is negative; use a number of seconds or units like '30s', '5m', "
             "'2h', '1d', '1h30m'"),
        (True, "invalid duration True; use a number of seconds or units like '30s', '5m', "
               "'2h', '1d', '1h30m'"),
        (float("inf"), "invalid duration inf; use a number of seconds or units like '30s', "
                       "'5m', '2h', '1d', '1h30m'"),
        ("99999999d", "duration '99999999d' is longer than 100 years"),
        ([1], "invalid duration [1] (a list); use a number of seconds or units like '30s', "
              "'5m', '2h', '1d', '1h30m'"),
    ],
)  # fmt: skip
def test_errors(bad: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_duration(bad)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    "value, text",
    [
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=8), "1w1d"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(0), "0s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(0, 10**12))
def test_format_round_trips(millis: int) -> None:
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value
