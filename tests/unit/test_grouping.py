"""The grouping rule both pools follow: requests grouped by expert, a fairness bound on waiting."""

from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ech0_moe.serving.local.grouping import HOLD_S, Grouping, Ticket
from ech0_moe.serving.local.pool import ExpertPool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    arrivals: list[tuple[float, str]], lanes: int, fairness: float, answer_s: float = 1.0, load_s: float = 0.5
) -> tuple[Grouping, list[Ticket], int]:
    """Serve `arrivals` ((time, expert)) on `lanes` lanes; each answer takes `answer_s`, plus
    `load_s` when its lane took a new expert. Returns the grouping, each request's wait until
    its grant, and the loads."""
    clock = Clock()
    g = Grouping(fairness, clock=clock)
    g.set_lanes({f"r{i}": "" for i in range(lanes)})
    pending = sorted(arrivals)
    running: list[tuple[float, int, object]] = []
    granted: list[Ticket] = []
    held = {name: "" for name in g.lanes}
    loads = 0
    while pending or running or g.waiting:
        while pending and pending[0][0] <= clock.now:
            g.arrive(pending.pop(0)[1])
        for ticket in g.grants():
            granted.append(ticket)
            took = held[ticket.lane] != ticket.expert
            loads += took
            held[ticket.lane] = ticket.expert
            heapq.heappush(running, (clock.now + answer_s + load_s * took, ticket.id, ticket))
        nxt = [t for t in (running[0][0] if running else None, pending[0][0] if pending else None) if t is not None]
        clock.now = min(nxt) if nxt else clock.now + 0.05
        while running and running[0][0] <= clock.now:
            g.finish(heapq.heappop(running)[2])  # type: ignore[arg-type]
    return g, granted, loads


def test_a_cold_burst_loads_each_expert_about_once():
    """At most experts + lanes - 1 loads: each expert once, plus a second copy per lane at the end."""
    for experts, n in ((4, 32), (8, 128)):
        burst = [(0.0, f"e{i % experts}") for i in range(n)]
        _, granted, loads = simulate(burst, lanes=2, fairness=10_000)
        assert len(granted) == n
        assert loads <= experts + 2 - 1


def test_an_expert_waiting_past_the_bound_gets_a_lane_within_one_answer():
    # a steady stream for `a` on the only lane; `b` arrives once and must not starve
    arrivals = [(i * 0.5, "a") for i in range(200)] + [(1.0, "b")]
    g, granted, loads = simulate(arrivals, lanes=1, fairness=5.0)
    assert loads == 3  # a, b, a again: one forced switch
    assert not g.waiting and len(granted) == 201
    b = next(t for t in granted if t.expert == "b")
    # the bound, then the answer in flight on the draining lane (events come every 0.5 s here)
    assert 5.0 < b.granted_at - b.arrived <= 5.0 + 1.0 + 0.5
    assert max(t.unserved for t in granted) <= 5.0 + 1.0 + 0.5


def test_unserved_time_is_bounded_by_fairness_plus_one_answer():
    clock = Clock()
    g = Grouping(5.0, clock=clock)
    g.set_lanes({"r0": ""})
    first = g.arrive("a")
    assert [t.id for t in g.grants()] == [first.id]
    b = g.arrive("b")
    worst = 0.0
    for step in range(1, 40):  # `a` answers take 1 s and keep coming
        clock.now = float(step)
        g.finish(next(t for t in [first] if t))
        first = g.arrive("a")
        granted = g.grants()
        for t in granted:
            worst = max(worst, t.unserved)
        if any(t.id == b.id for t in granted):
            break
        first = next((t for t in granted if t.expert == "a"), first)
    assert b.lane == "r0"
    assert b.unserved <= 5.0 + 1.0 + 1e-9
    assert worst <= 5.0 + 1.0 + 1e-9


def test_after_a_load_the_lane_waits_for_its_answer_request():
    clock = Clock()
    g = Grouping(60.0, clock=clock)
    g.set_lanes({"r0": ""})
    load = g.arrive("a")
    g.grants()
    g.arrive("b")
    clock.now = 0.2
    g.finish(load, hold=True)
    assert g.grants() == []  # `a`'s answer request is on its way
    answer = g.arrive("a")
    assert [t.id for t in g.grants()] == [answer.id]
    g.finish(answer)
    clock.now = 0.3 + HOLD_S
    assert [t.expert for t in g.grants()] == ["b"]


def test_a_lane_gone_is_dropped_and_a_cancelled_request_leaves_the_queue():
    clock = Clock()
    g = Grouping(60.0, clock=clock)
    g.set_lanes({"r0": "a", "r1": "b"})
    t = g.arrive("a")
    assert g.grants()[0].lane == "r0"
    g.drop_lane("r0")
    g.finish(t)  # its lane is gone: nothing to do
    again = g.arrive("a")
    gone = g.arrive("c")
    g.cancel(gone)
    granted = g.grants()
    assert [x.id for x in granted] == [again.id] and granted[0].lane == "r1"
    assert "c" not in g.waiting
    g.set_lanes({"r1": "a", "r2": ""})  # the table shows the replacement
    assert set(g.lanes) == {"r1", "r2"}


def test_a_new_expert_goes_to_an_empty_lane_not_to_the_idle_one_holding_another():
    clock = Clock()
    g = Grouping(60.0, clock=clock)
    g.set_lanes({"a-lane": "", "b-lane": ""})
    first = g.arrive("math")
    (granted,) = g.grants()
    clock.now = 5.0  # past the hold after its load
    g.finish(granted)
    assert g.grants() == []
    g.arrive("physics")
    (other,) = g.grants()
    assert other.lane != granted.lane and first.lane == granted.lane


def _slow(fake, seconds: float):
    chat = fake.chat

    def slow_chat(*args, **kwargs):
        time.sleep(seconds)
        return chat(*args, **kwargs)

    fake.chat = slow_chat
    return fake


def test_the_embedded_pool_groups_a_cold_burst_by_weights_file(pool_config, fake) -> None:
    pool = ExpertPool(pool_config, {"llamacpp": _slow(fake, 0.01)})
    experts = ["math", "biology", "physics", "general"]  # a.gguf, b.gguf, a.gguf, b.gguf

    def client(i: int) -> None:  # as the graph does: swap_load, then answer
        pool.ensure_loaded(experts[i % 4])
        time.sleep(0.005)
        pool.chat(experts[i % 4], [{"role": "user", "content": "q"}], 4)

    with ThreadPoolExecutor(32) as clients:
        list(clients.map(client, range(32)))
    assert pool.swaps <= 2  # files + lanes - 1: the load's hold keeps the file for its answer


def test_the_embedded_pool_serves_a_waiting_file_within_the_fairness_bound(pool_config, fake) -> None:
    """A steady stream for one file must not keep another file's request waiting past the bound
    (without the bound it waits for the whole stream)."""
    pool = ExpertPool(pool_config, {"llamacpp": _slow(fake, 0.02)}, fairness=0.3)
    stop = time.monotonic() + 1.2
    waited: list[float] = []

    def stream() -> None:
        while time.monotonic() < stop:
            pool.chat("math", [{"role": "user", "content": "q"}], 4)

    def other() -> None:
        time.sleep(0.1)
        t0 = time.monotonic()
        pool.chat("biology", [{"role": "user", "content": "q"}], 4)
        waited.append(time.monotonic() - t0)

    threads = [threading.Thread(target=stream) for _ in range(4)] + [threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert waited and waited[0] < 0.3 + 0.45, waited  # the bound, then the answers in flight (1.1 s unbounded)
    assert [e.expert for e in pool.events][:3] == ["math", "biology", "math"]


def test_two_starving_experts_each_get_a_lane_at_once():
    clock = Clock()
    g = Grouping(5.0, clock=clock)
    g.set_lanes({"r0": "", "r1": ""})
    for expert in ("a", "a", "a", "b", "b", "b"):
        g.arrive(expert)
    running = g.grants()
    assert sorted(t.expert for t in running) == ["a", "b"]
    g.arrive("c"), g.arrive("d")
    clock.now = 6.0  # c and d are past the bound while a and b still have queues
    assert g.grants() == [] and all(lane.draining for lane in g.lanes.values()) and g.forced == 2
    for t in running:
        g.finish(t)
    assert sorted(t.expert for t in g.grants()) == ["c", "d"]
