"""The one thread that owns sippy: it imports the stack and runs its dispatcher `ED2`, nothing else.

sippy's `ED2` is a process-wide singleton bound to the thread that first imports it, so the thread is
created once per process and lives until exit (a daemon); services attach and detach their transaction
managers to it. Commands go in with `ED2.callFromThread`; results and events come back to asyncio with
`loop.call_soon_threadsafe`. Exceptions raised by commands are caught and logged here: sippy would
swallow them silently.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from trunkline.logs import get_logger

log = get_logger("trunkline.sip.thread")
T = TypeVar("T")


class SipThreadError(RuntimeError):
    """The SIP thread could not start (sippy missing or failing to import)."""


class SipThread:
    """Process-wide SIP thread; use `SipThread.get()`."""

    _instance: ClassVar[SipThread | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ed2: Any = None
        self._thread = threading.Thread(target=self._main, name="trunkline-sip", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None or self._ed2 is None:
            raise SipThreadError(f"sippy dispatcher did not start: {self._error!r}")

    @classmethod
    def get(cls) -> SipThread:
        """The SIP thread of this process, started on first use."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = SipThread()
            return cls._instance

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _main(self) -> None:
        try:
            from sippy.Core.EventDispatcher import ED2
            from sippy.Udp_server import Udp_server_opts

            # One sender thread: with several, a 180 and a 200 sent back to back can leave out of order.
            Udp_server_opts.nworkers = 1
            # no SO_REUSEADDR: a second server on the port must fail to bind, not silently take its traffic
            Udp_server_opts.flags = 0
            self._ed2 = ED2
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            try:
                ED2.loop()
            except Exception:
                log.exception("sip.dispatcher_crashed")

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the SIP thread soon; errors are logged, never lost."""
        self._ed2.callFromThread(_guarded, fn, args)

    def on_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the SIP thread and await its result (or exception) from asyncio."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

        self._ed2.callFromThread(job)
        return await future


def _guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("sip.command_failed", command=getattr(fn, "__qualname__", repr(fn)))


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class EventSink:
    """Posts frozen events from the SIP thread to a callback on the asyncio loop; drops them after close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._closed = False

    def post(self, event: Any) -> None:
        if self._closed or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._callback, event)
        except RuntimeError:  # loop closed between the check and the call
            self._closed = True

    def close(self) -> None:
        self._closed = True
