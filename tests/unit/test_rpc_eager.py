"""mesh.rpc.channel.start_eagerly: a handler runs at once up to its first suspension."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from mesh.rpc.channel import start_eagerly

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")


async def test_a_coroutine_that_does_not_suspend_finishes_without_a_task():
    seen = []

    async def quick():
        var.set("inner")
        seen.append(var.get())

    assert start_eagerly(quick()) is None
    assert seen == ["inner"] and var.get() == "outer"  # ran in its own context


async def test_a_suspending_coroutine_carries_on_in_a_task_with_its_context():
    gate = asyncio.get_running_loop().create_future()
    steps = []

    async def slow():
        var.set("inner")
        steps.append("before")
        value = await gate
        steps.append((value, var.get()))
        return value

    task = start_eagerly(slow())
    assert steps == ["before"] and task is not None and not task.done()
    gate.set_result(7)
    assert await asyncio.wait_for(task, 5) == 7
    assert steps == ["before", (7, "inner")] and var.get() == "outer"


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    cleaned = []

    async def waits():
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append(True)

    task = start_eagerly(waits())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert cleaned == [True]


async def test_an_exception_before_the_first_suspension_surfaces_in_a_task():
    async def broken():
        raise ValueError("bug")

    task = start_eagerly(broken())
    with pytest.raises(ValueError, match="bug"):
        await asyncio.wait_for(task, 5)


async def test_an_exception_after_a_suspension_surfaces_in_the_task():
    async def later():
        await asyncio.sleep(0)
        raise KeyError("late")

    task = start_eagerly(later())
    with pytest.raises(KeyError):
        await asyncio.wait_for(task, 5)


# ---------------------------------------------------------------- handlers outside a task (in_task=False)

async def _driven_pair(handler):
    from mesh.rpc import RpcPeer, RpcServer
    from mesh.rpc.pipe import pipe

    a, b = pipe()
    server = RpcServer().respond("work", handler, in_task=False)
    channel = server.attach(b)
    return RpcPeer(a), channel


async def test_a_handler_outside_a_task_carries_on_from_the_future_it_awaits():
    gate = asyncio.get_running_loop().create_future()
    seen = []

    async def handler(value):
        var.set("inner")
        got = await gate
        await asyncio.sleep(0)  # a bare yield is carried on too
        seen.append((asyncio.current_task(), var.get()))
        return value + got

    peer, channel = await _driven_pair(handler)
    call = asyncio.ensure_future(peer.request("work", 1))
    while not channel._tasks:  # the request is being served, suspended on the gate
        await asyncio.sleep(0)
    (driven,) = channel._tasks
    assert not isinstance(driven, asyncio.Task)
    gate.set_result(41)
    assert await asyncio.wait_for(call, 5) == 42
    assert seen == [(None, "inner")] and not channel._tasks


async def test_a_handler_outside_a_task_is_cancelled_where_it_waits_when_the_channel_closes():
    waiting = asyncio.get_running_loop().create_future()
    cleaned = asyncio.Event()

    async def handler(value):
        try:
            await waiting
        finally:
            cleaned.set()

    peer, channel = await _driven_pair(handler)
    call = asyncio.ensure_future(peer.request("work", 1))
    while not channel._tasks:
        await asyncio.sleep(0)
    channel.close()
    await asyncio.wait_for(cleaned.wait(), 5)
    assert waiting.cancelled() and not channel._tasks
    with pytest.raises(Exception):
        await asyncio.wait_for(call, 5)


async def test_a_handler_outside_a_task_that_fails_after_an_await_answers_with_an_error():
    from mesh.rpc.errors import RequestFailedError

    async def handler(value):
        await asyncio.sleep(0)
        raise ValueError("bad value")

    peer, _channel = await _driven_pair(handler)
    with pytest.raises(RequestFailedError, match="bad value"):
        await asyncio.wait_for(peer.request("work", 1), 5)
