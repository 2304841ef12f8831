"""One protomux-rpc channel on a connection (asyncio): requests out, handlers in.

protomux-rpc is symmetric: the same channel sends requests and answers the
peer's. Each incoming request runs as its own task, so a slow handler never
holds up the others; each outgoing request waits on a future keyed by its id,
and a response for an id nobody waits on any more (timed out, cancelled) is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import codec
from . import errors as E
from . import messages as M
from .config import RpcConfig
from .session import Session

Handler = Callable[[Any], Any | Awaitable[Any]]


@dataclass(frozen=True)
class Responder:
    handler: Handler
    encoding: codec.Encoding
    inband_errors: bool = False  # hp-svc-facs-net: errors as the JSON string "[HRPC_ERR]=..."
    in_task: bool = True  # False: carried on from awaited futures' callbacks (see _Driven)


@dataclass(frozen=True)
class RequestContext:
    """What a handler can learn about the request it serves (see current_request())."""
    method: str
    remote_public_key: bytes | None
    channel: RpcChannel


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("mesh_rpc_request")


def current_request() -> RequestContext:
    """The request the running handler serves (LookupError outside a handler)."""
    return _current.get()


class RpcChannel:
    def __init__(self, session: Session, id: bytes | None, responders: dict[str, Responder],  # noqa: A002
                 config: RpcConfig, capability: bytes | None = None):
        self.session = session
        self.config = config
        self.responders = responders
        self.capability = capability
        self.counters: dict[str, int] = {}
        self._pending: dict[int, tuple[asyncio.Future, codec.Encoding, bool]] = {}
        self._next_id = 1
        self._tasks: set[asyncio.Task] = set()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[bool] = loop.create_future()
        self._close_error: E.RpcError | None = None
        conn = session.conn
        handshake = b""
        if capability is not None:
            cap = M.capability(conn.is_initiator, capability, conn.handshake_hash)
            handshake = M.encode_handshake(cap)
        self.channel = session.open_channel(M.PROTOCOL, id, handshake, self)

    @property
    def is_closed(self) -> bool:
        return self.channel.closed

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # ------------------------------------------------------------ caller side

    async def request(self, method: str, value: Any = None, *, timeout: float | None = None,
                      encoding: str | codec.Encoding | None = None, inband_errors: bool = False) -> Any:
        """Send a request and return the decoded response value.

        Raises RpcRemoteError subclasses for errors the peer sent, RpcTimeoutError,
        ChannelClosedError, MessageTooLargeError / ValueEncodeError (nothing sent)
        and ValueDecodeError.
        """
        enc = codec.get(encoding or self.config.default_encoding)
        if self.channel.closed:
            raise self._closed_error()
        body = enc.encode(value)
        rid = self._next_id
        self._next_id += 1
        payload = M.encode_request(rid, method, body)
        self._check_size(payload, "request")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[rid] = (fut, enc, inband_errors)
        if timeout is None:
            timeout = self.config.default_timeout
        try:
            session = self.session
            session.send(self.channel, M.REQUEST, payload)
            if timeout is None:
                if session.must_drain():
                    await session.drain()
                return await fut
            if not session.must_drain():
                # The common case: only the reply to wait for; a timer on the
                # future is cheaper than a cancel scope around the task.
                timer = loop.call_at(loop.time() + timeout, _expire, fut)
                try:
                    return await fut
                finally:
                    timer.cancel()
            async with asyncio.timeout(timeout):
                await session.drain()
                return await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                return fut.result()
            raise E.RpcTimeoutError(f"timeout of {int(timeout * 1000)}ms exceeded") from None
        finally:
            self._pending.pop(rid, None)  # a late response is now dropped

    def event(self, method: str, value: Any = None, *, encoding: str | codec.Encoding | None = None) -> None:
        """Send a fire-and-forget event (request id 0, never answered)."""
        enc = codec.get(encoding or self.config.default_encoding)
        if self.channel.closed:
            raise self._closed_error()
        payload = M.encode_request(0, method, enc.encode(value))
        self._check_size(payload, "event")
        self.session.send(self.channel, M.REQUEST, payload)

    def _check_size(self, payload: bytes, what: str) -> None:
        # + 2: the channel id and message type in front of the payload
        if len(payload) + 2 > self.config.max_message_size:
            raise E.MessageTooLargeError(
                f"{what} of {len(payload) + 2} bytes exceeds the limit of {self.config.max_message_size}")

    def close(self) -> None:
        """Close the channel (sends protomux close); pending requests fail with CHANNEL_CLOSED."""
        self.session.close_channel(self.channel)

    def _closed_error(self) -> E.RpcError:
        return self._close_error or E.ChannelClosedError()

    # ------------------------------------------------------------ session callbacks

    def on_open(self) -> None:
        if self.capability is not None:
            conn = self.session.conn
            if not M.verify_capability(self.channel.remote_handshake, conn.is_initiator, self.capability,
                                       conn.handshake_hash):
                err = E.CapabilityError()
                self._close_error = err
                if not self.opened.done():
                    self.opened.set_exception(err)
                    self.opened.exception()  # retrieved: nobody may be waiting on it
                conn.destroy(err)
                return
        if not self.opened.done():
            self.opened.set_result(True)

    def on_close(self, remote: bool) -> None:
        err = self._closed_error()
        for fut, _enc, _inband in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.closed.done():
            self.closed.set_result(remote)

    def on_message(self, type_: int, payload: memoryview) -> None:
        if type_ == M.REQUEST:
            self._on_request(payload)
        elif type_ == M.RESPONSE:
            self._on_response(payload)
        else:
            self._count("unknown_message_type")

    def _on_response(self, payload: memoryview) -> None:
        try:
            res = M.decode_response(payload)
        except E.DecodeError:
            self._count("bad_response")
            return
        entry = self._pending.pop(res.id, None)
        if entry is None:
            self._count("late_response")
            return
        fut, enc, inband = entry
        if fut.done():
            return
        if len(payload) + 2 > self.config.max_message_size:
            fut.set_exception(E.MessageTooLargeError(
                f"response of {len(payload) + 2} bytes exceeds the limit of {self.config.max_message_size}"))
        elif res.error is not None:
            w = res.error
            fut.set_exception(E.from_wire(w.message, w.code, w.cause_message, w.cause_code, w.context))
        else:
            try:
                value = enc.decode(res.value)
            except E.ValueDecodeError as e:
                fut.set_exception(e)
                return
            msg = codec.inband_error_message(value) if inband else None
            if msg is not None:
                fut.set_exception(E.InbandError(E.HRPC_ERR, msg))
            else:
                fut.set_result(value)

    def _on_request(self, payload: memoryview) -> None:
        try:
            req = M.decode_request(payload)
        except E.DecodeError:
            self._count("bad_request")
            return
        if len(payload) + 2 > self.config.max_message_size:
            self._count("oversized_request")
            self._reply_error(req.id, E.decode_failed(
                f"request of {len(payload) + 2} bytes exceeds the limit of {self.config.max_message_size}",
                E.MESSAGE_TOO_LARGE))
            return
        responder = self.responders.get(req.method)
        if responder is None:
            self._count("unknown_method")
            self._reply_error(req.id, E.unknown_method(req.method))
            return
        if len(self._tasks) >= self.config.max_handlers:
            self._count("busy")
            self._reply_error(req.id, E.busy(self.config.max_handlers))
            return
        task = start_eagerly(self._serve(req, responder), on_done=self._tasks.discard,
                             in_task=responder.in_task)
        if task is not None:
            self._tasks.add(task)  # on_done takes it out as it ends (a done callback would cost a loop turn)

    def _reply_error(self, rid: int, error: E.WireError) -> None:
        if rid:  # id 0 = event: never answered
            self.session.send(self.channel, M.RESPONSE, M.encode_error_response(rid, error))

    async def _serve(self, req: M.Request, responder: Responder) -> None:
        _current.set(RequestContext(req.method, getattr(self.session.conn, "remote_public_key", None), self))
        enc = responder.encoding
        try:
            value = enc.decode(req.value)
        except E.ValueDecodeError as e:
            if responder.inband_errors:
                return await self._reply_value(req.id, enc, codec.inband_error("ERR_FACS_NET_DATA_FORMAT"))
            return self._reply_error(req.id, E.decode_failed(e.message))
        try:
            result = responder.handler(value)
            if type(result) is types.CoroutineType or inspect.isawaitable(result):  # async def first: cheap
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any handler failure is the caller's REQUEST_ERROR
            self._count("handler_error")
            if responder.inband_errors:
                return await self._reply_value(req.id, enc, codec.inband_error(str(e) or type(e).__name__))
            return self._reply_error(req.id, E.request_failed(e))
        await self._reply_value(req.id, enc, result)

    async def _reply_value(self, rid: int, enc: codec.Encoding, result: Any) -> None:
        if not rid:
            return
        try:
            payload = M.encode_response(rid, enc.encode(result))
            self._check_size(payload, "response")
        except E.MessageTooLargeError as e:
            return self._reply_error(rid, E.encode_failed(e.message, E.MESSAGE_TOO_LARGE))
        except E.ValueEncodeError as e:
            return self._reply_error(rid, E.encode_failed(e.message))
        session = self.session
        if session.send(self.channel, M.RESPONSE, payload) and session.must_drain():
            await session.drain()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def start_eagerly(coro, on_done: Callable[[Any], None] | None = None,
                  in_task: bool = True) -> "asyncio.Task | _Driven | None":
    """Run `coro` (in its own context, as a task would) up to its first real
    suspension: a handler that answers at once does so while its request's
    packet is processed, with no task and no loop turn (Python 3.12's eager
    tasks). Returns what carries on from the suspension, or None when the
    coroutine finished: a task, or with `in_task=False` (and a future to wait
    on) a `_Driven`. Either calls `on_done(itself)` as the coroutine ends."""
    ctx = contextvars.copy_context()
    try:
        yielded = ctx.run(coro.send, None)
    except StopIteration:
        return None
    except Exception as e:  # noqa: BLE001 - surfaced exactly as a failed task's would be
        return asyncio.get_running_loop().create_task(_raise(e), context=ctx)
    if not in_task and getattr(yielded, "_asyncio_future_blocking", False):
        return _Driven(coro, ctx, yielded, on_done or _ignore)
    return asyncio.get_running_loop().create_task(_Resumed(coro, yielded, on_done), context=ctx)


def _ignore(_carrier) -> None:
    pass


class _Driven:
    """A coroutine carried on by the done callbacks of the futures it awaits, not
    by a Task: the code after an `await` runs in the turn the future completes
    in, where a task would take one more turn to be woken (and one more to start).
    For handlers that await only asyncio futures and need no current task (no
    `asyncio.timeout`, for one); `RpcServer.respond(..., in_task=False)`."""

    __slots__ = ("_coro", "_ctx", "_loop", "_waiting", "_on_done", "_cancelling")

    def __init__(self, coro, ctx: contextvars.Context, yielded: asyncio.Future, on_done: Callable[[Any], None]):
        self._coro = coro
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._waiting: asyncio.Future | None = None
        self._on_done = on_done
        self._cancelling = False
        self._wait(yielded)

    def _wait(self, fut) -> None:
        if fut is None:  # a bare yield (asyncio.sleep(0)): carry on next turn
            self._loop.call_soon(self._step, None, context=self._ctx)
        elif getattr(fut, "_asyncio_future_blocking", False):
            fut._asyncio_future_blocking = False
            self._waiting = fut
            fut.add_done_callback(self._step, context=self._ctx)
        else:  # what a Task would refuse too
            self._cancelling = True
            self._loop.call_soon(self._step, None, context=self._ctx)
            self._loop.call_exception_handler({"message": f"driven RPC handler yielded {fut!r}"})

    def _step(self, _fut) -> None:
        self._waiting = None
        try:
            # as a Task does: a completed future's value is read by its own __await__
            yielded = self._coro.throw(asyncio.CancelledError()) if self._cancelling else self._coro.send(None)
        except (StopIteration, asyncio.CancelledError):
            self._on_done(self)
        except BaseException as e:  # noqa: BLE001 - reported as a failed task's exception would be
            self._on_done(self)
            self._loop.call_exception_handler({"message": "RPC handler failed", "exception": e})
            if not isinstance(e, Exception):
                raise
        else:
            self._wait(yielded)

    def cancel(self) -> None:
        """As Task.cancel: the awaited future is cancelled and the coroutine gets CancelledError."""
        if self._cancelling:
            return
        self._cancelling = True
        fut = self._waiting
        if fut is not None:
            fut.cancel()  # its done callback steps us (if it was done already, that is on its way)


async def _raise(exc: BaseException) -> None:
    raise exc


class _Resumed(collections.abc.Coroutine):
    """The coroutine of the task that carries `coro` on from its first
    suspension: the task's first step is handed the future `coro` is blocked on,
    later steps and throws go into `coro`, and `on_done(task)` runs as it ends.

    A class, not a generator: from Python 3.12 a Task takes no generator-based
    coroutine, and a cancel before the task's first step must still reach `coro`
    where it waits (an `async def` wrapper would end without running it).
    """

    __slots__ = ("_coro", "_yielded", "_on_done")

    def __init__(self, coro, yielded, on_done: Callable[[Any], None] | None):
        self._coro = coro
        self._yielded = yielded
        self._on_done = on_done

    def send(self, value):
        if self._yielded is not _SENT:
            yielded, self._yielded = self._yielded, _SENT
            return yielded
        return self._step(self._coro.send, value)

    def throw(self, exc, *args):
        self._yielded = _SENT
        return self._step(self._coro.throw, exc, *args)

    def close(self) -> None:
        self._yielded = _SENT
        try:
            self._coro.close()
        finally:
            self._finish()

    def __await__(self):
        return self

    def __next__(self):
        return self.send(None)

    def _step(self, step, *args):
        try:
            return step(*args)
        except BaseException:  # StopIteration included: the coroutine ended, in any way
            self._finish()
            raise

    def _finish(self) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(asyncio.current_task())


_SENT = object()  # _Resumed: the first future was handed over

