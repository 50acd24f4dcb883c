"""Concurrent requests grouped by expert inside the Serve application (`ray.fairness` > 0).

`Dispatcher` is the application's ingress: one replica holding a queue per expert. It hands each
request to an expert replica (a lane) by the rule of `pool.grouping.Grouping`: a replica that
holds or is loading an expert gets that expert's requests, and switches expert only when that
queue is empty or another expert has waited past `ray.fairness` seconds. `PinnedRouter`, the
expert deployment's Ray Serve request router, sends a request the dispatcher pinned (its session
id names a replica) to that replica; Ray's multiplexing alone would send a cold burst anywhere.
Lanes are the replicas the residency table lists; a replica that fails a request is dropped
while the table shows its replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.request_router import MultiplexMixin, PendingRequest, RequestRouter, RunningReplica

from ech0_moe.serving.local.grouping import Grouping, Ticket

DISPATCHER_DEPLOYMENT = "Dispatcher"
PIN = "replica:"  # session id of a pinned request: PIN + the replica's unique id
PIN_GRACE_S = 5.0  # a pinned replica the router does not know yet (just started) is waited for this long
TICK_S = 0.05  # the fairness bound and the hold after a load are times: decisions are re-made this often
LANES_TTL_S = 2.0  # the residency table is re-read at most this often
DEAD_S = 30.0  # a replica that failed a request is not a lane for this long, whatever the table says


class PinnedRouter(MultiplexMixin, RequestRouter):
    """The expert replicas' request router: a pinned request goes to its replica; any other is
    routed as Ray's multiplexing would (replicas holding its model first)."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        session = pending_request.metadata.session_id if pending_request else ""
        if pending_request and session.startswith(PIN):
            target = session.removeprefix(PIN)
            pinned = [r for r in candidate_replicas if r.replica_id.unique_id == target]
            if pinned:
                return [pinned]
            if time.time() - pending_request.created_at < PIN_GRACE_S:
                pending_request.routing_context.should_backoff = True
                return []  # a replica Ray has just started, not known to this router yet
        ids = self.apply_multiplex_routing(pending_request)
        return [[r for r in candidate_replicas if r.replica_id in ids]]


@serve.deployment(
    name=DISPATCHER_DEPLOYMENT, num_replicas=1, max_ongoing_requests=100_000, ray_actor_options={"num_cpus": 0}
)
class Dispatcher:
    """The ingress: queues each request under its expert and forwards it to the replica
    `Grouping` grants it (same methods as `ExpertReplica`: `load`, `chat`)."""

    def __init__(self, experts: Any, residency: Any, fairness: float) -> None:
        self.experts, self.residency = experts, residency
        self.grouping = Grouping(fairness)
        self.ready: dict[int, asyncio.Event] = {}
        self.dead: dict[str, float] = {}  # replicas that failed a request -> when
        self.lanes_at = 0.0
        self.ticker: asyncio.Task[None] | None = None
        self.record = {
            "requests": 0,
            "max_queued_s": 0.0,  # arrival to grant
            "max_unserved_s": 0.0,  # the longest an expert with requests waiting went without a grant
            "max_service_s": 0.0,  # grant to done: one load or answer on a replica
        }

    async def _refresh_lanes(self) -> None:
        if time.monotonic() - self.lanes_at < LANES_TTL_S and self.grouping.lanes:
            return
        self.lanes_at = time.monotonic()
        rows = await self.residency.table.remote()
        recent = {r for r, at in self.dead.items() if self.lanes_at - at < DEAD_S}  # the table may lag
        self.grouping.set_lanes({r["replica"]: r["expert"] for r in rows if r["replica"] not in recent})

    def _wake(self) -> None:
        for ticket in self.grouping.grants():
            self.ready.pop(ticket.id).set()

    async def _tick(self) -> None:
        while self.ready:
            with contextlib.suppress(Exception):  # the table is re-read next tick
                await self._refresh_lanes()
            self._wake()
            await asyncio.sleep(TICK_S)
        self.ticker = None

    @contextlib.asynccontextmanager
    async def _turn(self, expert: str, *, load: bool = False) -> AsyncIterator[str]:
        """Wait for a lane serving `expert`; yields the replica's pin."""
        ticket = self.grouping.arrive(expert)
        self.ready[ticket.id] = event = asyncio.Event()
        if self.ticker is None:
            self.ticker = asyncio.create_task(self._tick())
        try:
            self._wake()
            await event.wait()
        except BaseException:  # the client went away while queued
            self.ready.pop(ticket.id, None)
            if ticket.lane:
                self.grouping.finish(ticket)
            else:
                self.grouping.cancel(ticket)
            self._wake()
            raise
        self._note(ticket)
        failed = False
        try:
            yield PIN + ticket.lane
        except Exception:  # replicas report their own failures as data: this is Ray's (a replica died)
            failed = True
            self.dead[ticket.lane] = time.monotonic()
            self.grouping.drop_lane(ticket.lane)
            self.lanes_at = 0.0
            raise
        finally:
            service = round(time.monotonic() - ticket.granted_at, 3)
            self.record["max_service_s"] = max(self.record["max_service_s"], service)
            if not failed:
                self.grouping.finish(ticket, hold=load)
            self._wake()

    def _note(self, ticket: Ticket) -> None:
        self.record["requests"] += 1
        self.record["max_queued_s"] = max(self.record["max_queued_s"], round(ticket.granted_at - ticket.arrived, 3))
        self.record["max_unserved_s"] = max(self.record["max_unserved_s"], round(ticket.unserved, 3))

    def _to(self, expert: str, pin: str, stream: bool = False) -> Any:
        return self.experts.options(multiplexed_model_id=expert, session_id=pin, stream=stream)

    async def load(self) -> dict[str, Any]:
        expert = serve.get_multiplexed_model_id()
        async with self._turn(expert, load=True) as pin:
            return await self._to(expert, pin).load.remote()

    async def chat(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        expert = serve.get_multiplexed_model_id()
        async with self._turn(expert) as pin:
            stream = self._to(expert, pin, stream=True).chat.remote(request)
            try:
                async for item in stream:
                    yield item
            finally:
                stream.cancel()  # a no-op once finished; stops the replica when the client went away

    def stats(self) -> dict[str, Any]:
        """What the dispatcher saw: requests, the longest queueing, the longest an expert with
        requests waiting went unserved, forced (fairness) switches, and loads per lane."""
        lanes = {name: lane.loads for name, lane in self.grouping.lanes.items()}
        return {
            **self.record,
            "forced_switches": self.grouping.forced,
            "fairness_s": self.grouping.fairness_s,
            "lane_loads": lanes,
        }
