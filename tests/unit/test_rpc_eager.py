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
