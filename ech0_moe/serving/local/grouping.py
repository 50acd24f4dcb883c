"""Grouping concurrent requests by expert, with a fairness bound (one rule for both pools).

A lane (a Ray replica; the process's memory budget for the embedded pool) serves one expert at a
time. Requests for the expert a lane holds or is loading join that lane; a lane switches expert
only when its expert's queue is empty, or when another expert's oldest request has waited longer
than `fairness_s` without being served. An expert's wait clock starts at its oldest waiting
request, or at the last time it was served (a request of it granted or finished) if later: an
expert just taken off a lane cannot at once force a switch back, so forced switches come at
most once per bound per lane.

`Grouping` only decides; the Ray dispatcher (`serving.dispatch.Dispatcher`, asyncio) and the embedded
`ExpertPool` (threads) carry the decisions out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ech0_moe.config import DEFAULT_FAIRNESS_S

HOLD_S = 1.0  # after a load, the lane waits this long for the same client's answer request
SHARE_QUEUE = 4  # an idle lane loads an expert another lane holds only if this many wait for it

_ids = itertools.count()


@dataclass
class Ticket:
    """One waiting request."""

    expert: str
    arrived: float
    lane: str = ""  # set when granted
    id: int = field(default_factory=lambda: next(_ids))
    granted_at: float = 0.0
    unserved: float = 0.0  # at its grant: how long its expert had gone unserved while it waited


@dataclass
class Lane:
    """One place an expert can be resident (a replica)."""

    name: str
    expert: str = ""  # held or being loaded ("" = none)
    busy: int = 0  # granted requests not finished
    hold_until: float = 0.0  # a load just finished here: its answer request is expected
    draining: bool = False  # fairness: finish what runs, then switch
    since: float = 0.0  # when it took its expert
    loads: int = 0  # times this lane took an expert it did not hold


class Grouping:
    """Which waiting request each lane serves next (see the module docstring)."""

    def __init__(
        self, fairness_s: float = DEFAULT_FAIRNESS_S, depth: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fairness_s = fairness_s
        self.depth = depth  # requests in flight per lane
        self.clock = clock
        self.lanes: dict[str, Lane] = {}
        self.waiting: dict[str, list[Ticket]] = {}  # expert -> tickets in arrival order
        self.served_at: dict[str, float] = {}  # expert -> last grant
        self.forced = 0  # switches the fairness bound forced

    # ---- the queue --------------------------------------------------------
    def arrive(self, expert: str) -> Ticket:
        ticket = Ticket(expert, self.clock())
        self.waiting.setdefault(expert, []).append(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """A ticket given up before its grant (the client went away)."""
        queue = self.waiting.get(ticket.expert, [])
        if ticket in queue:
            queue.remove(ticket)
        if not queue:
            self.waiting.pop(ticket.expert, None)

    def waited(self, expert: str, now: float | None = None) -> float:
        """How long `expert` has waited unserved: since its oldest waiting request, or since it
        was last served if that is later (0 when nothing waits for it)."""
        queue = self.waiting.get(expert)
        if not queue:
            return 0.0
        now = self.clock() if now is None else now
        return now - max(queue[0].arrived, self.served_at.get(expert, 0.0))

    def starving(self, exclude: Iterable[str] = ()) -> list[str]:
        """Experts (not in `exclude`) waiting past the fairness bound, longest first."""
        now, skip = self.clock(), set(exclude)
        late = [e for e in self.waiting if e not in skip and self.waited(e, now) > self.fairness_s]
        return sorted(late, key=lambda e: -self.waited(e, now))

    def first(self, candidates: Iterable[str]) -> str:
        """Of `candidates` with requests waiting, the one that has waited longest ("" if none)."""
        now = self.clock()
        waiting = [e for e in candidates if self.waiting.get(e)]
        return max(waiting, key=lambda e: self.waited(e, now), default="")

    def grant(self, ticket: Ticket, lane: str = "") -> Ticket:
        """Take `ticket` off the queue: it is served now (on `lane`)."""
        self.waiting[ticket.expert].remove(ticket)
        if not self.waiting[ticket.expert]:
            del self.waiting[ticket.expert]
        ticket.lane, ticket.granted_at = lane, self.clock()
        ticket.unserved = ticket.granted_at - max(ticket.arrived, self.served_at.get(ticket.expert, 0.0))
        self.served_at[ticket.expert] = ticket.granted_at
        return ticket

    # ---- lanes ------------------------------------------------------------
    def set_lanes(self, lanes: dict[str, str]) -> None:
        """The lanes there are now (name -> the expert it holds); lanes gone are dropped, work on
        them included, and new ones start with what they report holding."""
        for name in list(self.lanes):
            if name not in lanes:
                del self.lanes[name]
        for name, expert in lanes.items():
            self.lanes.setdefault(name, Lane(name, expert))

    def drop_lane(self, name: str) -> None:
        self.lanes.pop(name, None)

    def finish(self, ticket: Ticket, *, hold: bool = False) -> None:
        """A granted request is done (`hold`: it was a load, an answer request follows)."""
        self.served_at[ticket.expert] = self.clock()  # served until now
        lane = self.lanes.get(ticket.lane)
        if lane is None:
            return
        lane.busy = max(0, lane.busy - 1)
        if hold:
            lane.hold_until = self.clock() + HOLD_S

    def grants(self) -> list[Ticket]:
        """The tickets to serve now, each with its lane; call after every change (and now and then:
        the fairness bound and the hold after a load are times)."""
        now = self.clock()
        granted: list[Ticket] = []
        held = {lane.expert for lane in self.lanes.values() if lane.expert}
        starving = self.starving(exclude=held)
        draining = [lane for lane in self.lanes.values() if lane.draining]
        busy = [lane for lane in self.lanes.values() if not lane.draining and self.waiting.get(lane.expert)]
        if len(busy) + len(draining) == len(self.lanes):  # no lane is free to take a starving expert
            # one switch per starving expert: the lanes longest on an expert that still has a queue
            for lane in sorted(busy, key=lambda lane: lane.since)[: max(0, len(starving) - len(draining))]:
                lane.draining = True
                self.forced += 1
        for lane in self.lanes.values():  # lanes with requests for their own expert serve them
            if not lane.draining:
                self._serve(lane, granted)
        idle = [
            lane
            for lane in self.lanes.values()
            if not lane.busy
            and (lane.draining or not self.waiting.get(lane.expert))
            and (lane.draining or not lane.expert or lane.hold_until <= now)  # after a load: its answer comes
        ]
        for lane in sorted(idle, key=lambda lane: (lane.expert != "", self.served_at.get(lane.expert, 0.0))):
            nxt = self._next_for(lane, held)  # empty lanes first, then the one idle longest
            if nxt and nxt != lane.expert:
                held.discard(lane.expert)
                lane.expert, lane.loads, lane.since = nxt, lane.loads + 1, now
                held.add(nxt)
            lane.draining, lane.hold_until = False, 0.0
            self._serve(lane, granted)
        return granted

    def _serve(self, lane: Lane, granted: list[Ticket]) -> None:
        """Grant `lane`'s expert's oldest requests while the lane has room."""
        queue = self.waiting.get(lane.expert)
        while queue and lane.busy < self.depth:
            granted.append(self.grant(queue[0], lane.name))
            lane.busy += 1
            queue = self.waiting.get(lane.expert)

    def _next_for(self, lane: Lane, held: set[str]) -> str:
        """The expert an idle lane takes: the starving one, else the one waiting longest that no
        lane holds, else one with a deep queue that another lane holds (a second copy)."""
        free = [e for e in self.waiting if e not in held or e == lane.expert]
        if lane.draining:
            free = [e for e in free if e != lane.expert] or free
        choice = next((e for e in self.starving(exclude=held) if e in free), "") or self.first(free)
        if choice:
            return choice
        deep = [e for e in self.waiting if len(self.waiting[e]) >= SHARE_QUEUE]
        return max(deep, key=lambda e: len(self.waiting[e]), default="")
