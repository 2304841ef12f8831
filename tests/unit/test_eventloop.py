"""mesh.eventloop: work at the end of the current loop iteration."""

from __future__ import annotations

import asyncio

from mesh.eventloop import MeshEventLoop, at_iteration_end, new_event_loop, run


async def test_tests_run_on_the_mesh_loop():
    assert isinstance(asyncio.get_running_loop(), MeshEventLoop)


async def test_iteration_end_runs_before_the_next_iteration():
    loop = asyncio.get_running_loop()
    order: list[str] = []
    done = loop.create_future()

    def first():
        loop.call_soon(lambda: order.append("next iteration"))
        at_iteration_end(lambda: order.append("end of this one"))
        order.append("callback")

    loop.call_soon(first)
    loop.call_soon(lambda: loop.call_soon(lambda: loop.call_soon(done.set_result, None)))
    await asyncio.wait_for(done, 5)
    assert order == ["callback", "end of this one", "next iteration"]


async def test_iteration_end_added_by_iteration_end_still_runs_without_io():
    fired = asyncio.Event()
    at_iteration_end(lambda: at_iteration_end(lambda: at_iteration_end(fired.set)))
    await asyncio.wait_for(fired.wait(), 5)  # nothing else would wake the selector


async def test_a_failing_callback_is_reported_and_the_loop_goes_on():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    after = asyncio.Event()
    try:
        at_iteration_end(lambda: 1 / 0)
        at_iteration_end(after.set)
        await asyncio.wait_for(after.wait(), 5)
    finally:
        loop.set_exception_handler(None)
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


def test_other_loops_get_a_call_soon_instead():
    order: list[str] = []

    async def main():
        at_iteration_end(lambda: order.append("soon"))
        order.append("now")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop = asyncio.SelectorEventLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert order == ["now", "soon"]
    mesh_loop = new_event_loop()
    assert isinstance(mesh_loop, MeshEventLoop)
    mesh_loop.close()
    assert run(asyncio.sleep(0, "x")) == "x"
