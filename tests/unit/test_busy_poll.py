"""mesh.busy_poll: the adaptive polling window and the selector that runs it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest

from mesh import eventloop
from mesh.busy_poll import STEP_S, BusyPollSelector, BusyPollWindow


# ---------------------------------------------------------------- the window (sans-IO)

def test_soon_wakeups_grow_the_window_by_doubling_up_to_its_max():
    w = BusyPollWindow(max_s=0.001)
    seen = []
    for _ in range(6):
        w.woke(idle_s=0.0003, polled_s=0.0)
        seen.append(w.window)
    assert seen == pytest.approx([STEP_S, 2 * STEP_S, 4 * STEP_S, 8 * STEP_S, 16 * STEP_S, 0.001])


def test_a_wasted_window_before_a_long_sleep_halves_it_down_to_nothing():
    w = BusyPollWindow(max_s=0.0004)
    for _ in range(5):
        w.woke(0.0001, 0.0)
    assert w.window == pytest.approx(0.0004)
    seen = []
    for _ in range(5):
        w.woke(idle_s=1.0, polled_s=w.window)
        seen.append(w.window)
    assert seen == pytest.approx([0.0002, 0.0001, STEP_S, 0.0, 0.0])


def test_a_long_sleep_without_polling_changes_nothing():
    w = BusyPollWindow(max_s=0.001)
    w.woke(1.0, 0.0)
    assert w.window == 0.0


def test_timers_shrink_a_wasted_window_but_never_grow_one():
    w = BusyPollWindow(max_s=0.0004)
    w.woke(0.0001, 0.0, by_io=False)
    assert w.window == 0.0  # a timer due soon: nothing to poll for
    for _ in range(4):
        w.woke(0.0001, 0.0)
    assert w.window == pytest.approx(0.0004)
    w.woke(0.0003, 0.0002, by_io=False)
    assert w.window == pytest.approx(0.0004)  # short: kept
    w.woke(1.0, 0.0004, by_io=False)
    assert w.window == pytest.approx(0.0002)  # a quiet process with timers stops polling too


def test_off_means_no_window_and_bad_settings_are_refused():
    w = BusyPollWindow(max_s=0.0)
    w.woke(0.0, 0.0)
    assert w.window == 0.0
    w.set_max(0.001)
    w.woke(0.0, 0.0)
    assert w.window == STEP_S
    w.set_max(0.0)
    assert w.window == 0.0
    with pytest.raises(ValueError):
        BusyPollWindow(max_s=-1)
    with pytest.raises(ValueError):
        w.set_max(-0.001)


# ---------------------------------------------------------------- the selector, on a real socket pair

class FakeClock:
    def __init__(self, tick: float):
        self.t = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def polling_selector(pair):
    """make(max_s, clock, yield_cpu, window=max_s): a BusyPollSelector watching the
    pair's first socket for reading, its window already open; closed after the test."""
    made = []

    def make(max_s, clock, yield_cpu, window=None):
        sel = BusyPollSelector(max_s, clock=clock, yield_cpu=yield_cpu)
        made.append(sel)
        sel.register(pair[0], 1)  # EVENT_READ
        sel.window.window = max_s if window is None else window
        return sel
    yield make
    for sel in made:
        sel.close()


def test_an_event_that_comes_while_polling_is_caught_without_sleeping(pair, polling_selector):
    a, b = pair
    yields = []

    def yield_cpu():
        yields.append(1)
        if len(yields) == 3:
            b.send(b"x")  # the peer answers while the selector polls

    sel = polling_selector(1.0, FakeClock(1e-6), yield_cpu)
    events = sel.select(None)  # would block forever without the poll
    assert [key.fileobj for key, _ in events] == [a]
    assert len(yields) == 3
    assert (sel.stats.hits, sel.stats.misses) == (1, 0)
    assert sel.window.window == 1.0  # a caught event keeps the window


def test_a_window_that_runs_out_sleeps_for_the_rest_of_the_timeout(polling_selector):
    clock = FakeClock(10e-6)
    yields = []
    sel = polling_selector(0.001, clock, lambda: yields.append(1))
    assert sel.select(0.02) == []  # timer due, no I/O
    assert sel.stats.misses == 1 and sel.stats.hits == 0
    # the clock advances 10 us per reading: about 1 ms of polling is about 100 readings
    assert 90 <= len(yields) <= 101


def test_polling_in_vain_before_a_long_sleep_halves_the_window(polling_selector):
    sel = polling_selector(0.001, time.perf_counter, lambda: None)
    assert sel.select(0.02) == []  # 1 ms polled, then asleep until the timer: 20 ms idle
    assert sel.window.window == pytest.approx(0.0005)
    assert sel.stats.misses == 1


def test_polling_stops_at_the_next_timer(polling_selector):
    yields = []
    sel = polling_selector(1.0, FakeClock(10e-6), lambda: yields.append(1))
    assert sel.select(0.0002) == []
    assert len(yields) <= 21  # 0.2 ms of 10 us readings, not the 1 s window


def test_a_zero_timeout_and_a_turned_off_window_never_poll(pair, polling_selector):
    _, b = pair
    yields = []
    sel = polling_selector(1.0, FakeClock(1e-6), lambda: yields.append(1))
    assert sel.select(0) == []
    sel.window.set_max(0.0)
    b.send(b"x")
    assert len(sel.select(None)) == 1
    assert yields == [] and sel.stats.hits == sel.stats.misses == 0


def test_a_wakeup_soon_after_a_missed_window_grows_it(pair, polling_selector):
    _, b = pair
    clock = FakeClock(10e-6)
    sel = polling_selector(0.001, clock, lambda: None, window=STEP_S)
    threading.Timer(0.01, b.send, (b"x",)).start()
    assert len(sel.select(5.0)) == 1
    # idle for about 50 us of fake time polled, then a real sleep measured on the same
    # fake clock (a few readings): well under max, so the window doubles
    assert sel.stats.misses == 1
    assert sel.window.window == pytest.approx(2 * STEP_S)


def test_a_paused_selector_sleeps_at_once(pair, polling_selector):
    _, b = pair
    yields = []
    sel = polling_selector(1.0, FakeClock(1e-6), lambda: yields.append(1))
    sel.paused = lambda: True
    assert sel.select(0.001) == []
    b.send(b"x")
    assert len(sel.select(None)) == 1
    assert yields == [] and sel.stats.misses == 0


# ---------------------------------------------------------------- on the mesh event loop

ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(100)
    if data == b"end":
        break
    time.sleep(0.001)  # answer after the loop has gone idle
    s.sendto(data, addr)
"""


def test_a_busy_polling_loop_catches_replies_and_still_runs_timers():
    """A UDP echo process answers 40 pings 1 ms late; the loop's window grows (50 ms
    at most) until replies are caught while polling. (A peer in another process, as in the
    mesh: a thread of this process would wait for the GIL the poller holds.)"""
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        addr = ("127.0.0.1", int(echo.stdout.readline()))

        async def main():
            loop = asyncio.get_running_loop()
            got: asyncio.Queue = asyncio.Queue()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    got.put_nowait(data)

            transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=addr)
            try:
                for i in range(40):
                    transport.sendto(b"%d" % i)
                    assert await asyncio.wait_for(got.get(), 10) == b"%d" % i
                await asyncio.sleep(0.01)  # a timer still fires on a polling loop
                transport.sendto(b"end")  # the echo process's cue to exit
            finally:
                transport.close()
            return eventloop.busy_poll_stats()

        stats = eventloop.run(main(), busy_poll_s=0.05)
        assert echo.wait(10) == 0
    finally:
        echo.kill()
        echo.wait()
        echo.stdout.close()
    assert stats is not None and stats.hits >= 10 and stats.poll_seconds > 0


async def test_set_busy_poll_reaches_the_running_mesh_loop_and_only_it():
    loop = asyncio.get_running_loop()
    assert eventloop.set_busy_poll(0.002)
    try:
        assert loop._busy_poll.window.max_s == 0.002
    finally:
        eventloop.set_busy_poll(0.0)
    other = asyncio.SelectorEventLoop()
    try:
        assert eventloop.set_busy_poll(0.002, other) is False
        assert eventloop.busy_poll_stats(other) is None
    finally:
        other.close()


async def test_threads_with_work_in_flight_pause_polling():
    """A thread finishing a job needs the GIL a poller holds: while executor jobs or
    registered checks say a thread works, the loop sleeps instead of polling."""
    loop = asyncio.get_running_loop()
    assert not loop._threads_working()
    release = threading.Event()
    job = loop.run_in_executor(None, release.wait, 10)
    assert loop._threads_working()
    release.set()
    assert await asyncio.wait_for(job, 10) is True
    assert not loop._threads_working()

    working = [True]
    undo = eventloop.pause_busy_poll_while(lambda: working[0])
    assert loop._threads_working()
    working[0] = False
    assert not loop._threads_working()
    working[0] = True
    undo()
    assert not loop._threads_working()
    undo()  # twice is harmless
