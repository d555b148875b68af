"""Do no harm, with pacing and the retry budget shared through a real Redis: the differential
suite's fault scripts (``tests/differential``; sync, asyncio and trio: under trio the slot is
the process's own), each played to the bare SDK and to ours, ours in a fleet. A 429 now engages
the fleet (token 429s with no header its token finder), slots are booked by round trips,
reports go out from a thread: none of it may cost a caller an answer, an attempt, a body or an
exception the bare SDK would have given it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ..differential import test_differential as suite
from ..differential.calls import Scenario
from ..differential.test_differential import DIFFERENTIAL, KNOWN, POLICY, Rig, differential
from .conftest import RedisServer

fleet_rig = suite.rig
"""The differential suite's rig (server, in-memory telemetry, logs), under this module's name."""


@pytest.mark.parametrize("scenario", KNOWN, ids=repr)
def test_known_scripts_in_a_fleet(
    fleet_rig: Rig, redis_server: RedisServer, scenario: Scenario
) -> None:
    differential(fleet_rig, scenario, replace(POLICY, redis_url=redis_server.url))


@settings(DIFFERENTIAL, max_examples=60)
@given(
    scenario=st.one_of(suite.scenarios("sync"), suite.scenarios("asyncio"), suite.scenarios("trio"))
)
def test_scripts_in_a_fleet(fleet_rig: Rig, redis_server: RedisServer, scenario: Scenario) -> None:
    redis_server.client.flushall()  # each script starts the fleet afresh, as ours does
    differential(fleet_rig, scenario, replace(POLICY, redis_url=redis_server.url))
