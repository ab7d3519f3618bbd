"""The round clock: rounds are time windows computed from the experiment's start and round duration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.rounds.clock import RoundClock


def test_round_windows_follow_the_protocol_formula():
    clock = RoundClock(start_time=1000.0, round_duration=10.0)
    assert clock.current_round(now=1000.0) == 0
    assert clock.current_round(now=1009.999) == 0
    assert clock.current_round(now=1010.0) == 1
    assert clock.current_round(now=999.0) == -1
    assert clock.round_start(3) == 1030.0
    assert clock.round_end(3) == 1040.0
    assert clock.seconds_to_next_round(now=1012.5) == pytest.approx(7.5)


def test_current_round_reads_dht_time():
    from hivemind.utils import get_dht_time

    clock = RoundClock(start_time=get_dht_time() - 25.0, round_duration=10.0)
    assert clock.current_round() in (2, 3)
    assert 0 < clock.seconds_to_next_round() <= 10.0


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_round_duration_is_refused(duration):
    with pytest.raises(ValueError, match="round_duration"):
        RoundClock(0.0, duration)


@given(
    start=st.floats(0, 2e9, allow_nan=False),
    duration=st.floats(0.5, 3600, allow_nan=False),
    offset=st.floats(0, 1e7, allow_nan=False),
)
def test_every_time_lies_in_its_rounds_window(start, duration, offset):
    clock = RoundClock(start, duration)
    t = start + offset
    r = clock.current_round(now=t)
    assert clock.round_start(r) <= t + 1e-6 * max(1.0, t)
    assert t < clock.round_end(r) + 1e-6 * max(1.0, t)
    assert 0 < clock.seconds_to_next_round(now=t) <= duration * (1 + 1e-9) + 1e-6 * max(1.0, t)
