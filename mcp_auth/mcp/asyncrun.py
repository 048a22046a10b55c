"""The event loop of `async def` handlers: one per server, on its own daemon thread.

`_AsyncRunner.run` hands a coroutine to the loop and waits on the call's own
thread, watching for cancellation; `_CallThread` is that thread seen from the
coroutine (blocking writes to the client go there, never onto the loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .outcome import RequestCancelled

logger = logging.getLogger("mcp_auth.server")  # the name operators and tests filter on


# How often a waiting handler looks up to notice its call was cancelled.
_WAIT_SLICE_SECONDS = 0.25


# --- async handlers ---------------------------------------------------------
#
# `async def` tools, resources, prompts and completions run on one event loop
# per McpServer, on a daemon thread that the first async call starts and
# McpServer.close() (called when the app closes) stops. The thread that
# dispatched the call (the same request thread a plain handler runs on) hands
# the coroutine to the loop and waits; while it waits it watches for
# cancellation, and it does the blocking work the coroutine asks of it
# (writing to the client), so nothing that may block runs on the loop. Plain
# handlers are untouched by all this: they run on their request thread as before.

# How long closing the server waits for cancelled async handlers to finish
# their cleanup before the loop stops anyway: enough for `finally` blocks that
# close connections, short enough that a shutdown does not hang on one that
# ignores cancellation.
ASYNC_SHUTDOWN_SECONDS = 5.0

_ASYNC_THREAD_NAME = "mcp-auth-async"


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve `future` on its loop, unless whoever awaited it was cancelled meanwhile."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _LoopWakingEvent(threading.Event):
    """A PendingReply's `answered` event that also wakes a coroutine awaiting the reply.

    The client's answer is delivered by a transport thread, which sets the
    event; the coroutine awaits `future` instead of blocking the loop on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        super().__init__()
        self._loop = loop
        self._future = future

    def set(self) -> None:
        super().set()
        try:
            self._loop.call_soon_threadsafe(_settle, self._future, None, None)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits the answer any more


_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

_FINISHED = None  # put in the inbox when the coroutine is done


class _CallThread:
    """The request thread of an async call, seen from the coroutine: blocking work goes here.

    Writing to the client can block (a WebSocket peer that stops reading), so
    an AsyncContext never writes on the loop: it queues the write for its own
    call's thread, which is idle while it waits for the coroutine anyway. One
    slow client then holds only its own calls, as it would with plain handlers,
    and the messages of one call keep their order.
    """

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the call's thread and return its result (from the coroutine)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if not self._open:
                raise RuntimeError("this call has ended: its context cannot talk to the client any more")
            self._inbox.put((fn, args, loop, done))
        return await done

    def finished(self) -> None:
        """The coroutine is done (called on the loop): the waiting thread returns."""
        self._inbox.put(_FINISHED)

    def serve(self, timeout: float) -> bool:
        """Wait up to `timeout` and do one job; True once the coroutine is done."""
        try:
            job = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        if job is _FINISHED:
            self._close()
            return True
        self._do(job)
        return False

    @staticmethod
    def _do(job: _Job) -> None:
        fn, args, loop, done = job
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:  # whatever it is, the coroutine awaiting it gets it
            error = exc
        try:
            loop.call_soon_threadsafe(_settle, done, result, error)
        except RuntimeError:
            pass  # the loop is closed

    def _close(self) -> None:
        # A job queued by a task that outlived the call (it kept the context) fails rather than hangs.
        with self._lock:
            self._open = False
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if job is not _FINISHED:
                _fn, _args, loop, done = job
                error = RuntimeError("this call has ended: its context cannot talk to the client any more")
                try:
                    loop.call_soon_threadsafe(_settle, done, None, error)
                except RuntimeError:
                    pass


async def _outcome(awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    """Await a handler; its exception is returned, so SystemExit from a tool cannot stop the loop."""
    try:
        return await awaitable, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return None, exc


def _close_unstarted(*awaitables: Awaitable[Any]) -> None:
    # A coroutine that will never run (on) is closed, so Python does not warn that it was never awaited.
    for awaitable in awaitables:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()


class _AsyncRunner:
    """The event loop of one McpServer's async handlers, on its own daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork (gunicorn --preload) the parent's loop thread does not exist here,
            # and a loop whose thread died is no use either: start anew.
            if self._loop is None or self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                # Daemon: a handler that ignores cancellation cannot hold up the process's exit.
                thread = threading.Thread(target=self._serve, args=(loop,), name=_ASYNC_THREAD_NAME, daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            # What asyncio.run does on the way out: cancel what still runs, then close.
            try:
                loop.run_until_complete(_cancel_all())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def run(self, awaitable: Awaitable[Any], helper: _CallThread, should_stop: Callable[[], bool]) -> Any:
        """Run `awaitable` on the loop and wait for it on this (the call's) thread.

        When `should_stop()` turns true (the call was cancelled, the session
        ended) the task is cancelled; the handler sees asyncio.CancelledError
        and this raises RequestCancelled once the task has ended.
        """
        outcome = _outcome(awaitable)
        try:
            loop = self._running_loop()
        except BaseException:
            _close_unstarted(outcome, awaitable)
            raise
        started: list[asyncio.Task[tuple[Any, BaseException | None]]] = []

        def start() -> None:
            task = loop.create_task(outcome)
            task.add_done_callback(lambda _: helper.finished())
            started.append(task)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # closed by a shutdown a moment ago
            _close_unstarted(outcome, awaitable)
            raise RequestCancelled("the server is shutting down") from None
        cancelling = False
        while not helper.serve(_WAIT_SLICE_SECONDS):
            if loop.is_closed():
                if started and started[0].done():
                    break  # it finished just before the loop closed
                # The server stopped the loop; a task it could not end (or never started) ends here.
                _close_unstarted(outcome, awaitable)
                raise RequestCancelled("the server shut down while the handler ran")
            if not cancelling and should_stop():
                cancelling = True
                try:
                    loop.call_soon_threadsafe(lambda: started[0].cancel())  # start() ran before: FIFO
                except RuntimeError:
                    pass  # closed meanwhile: noticed above at the next turn
        task = started[0]
        if task.cancelled():
            raise RequestCancelled("the call was cancelled")
        value, error = task.result()
        if error is not None:
            raise error
        return value

    def stop(self) -> None:
        """End the loop's thread: handlers still running are cancelled and get ASYNC_SHUTDOWN_SECONDS."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            loop.stop()  # a handler closed the server: the loop winds down once it yields
            return
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            return  # already closed
        # The thread's way out waits ASYNC_SHUTDOWN_SECONDS for cancelled handlers; the rest is margin.
        thread.join(ASYNC_SHUTDOWN_SECONDS * 2)


async def _cancel_all() -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ASYNC_SHUTDOWN_SECONDS
    current = asyncio.current_task()
    # Again until none is left: a call that arrived during the shutdown may have started one.
    while tasks := [task for task in asyncio.all_tasks() if task is not current]:
        for task in tasks:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning(
                "%d async handler(s) went on %g s after being cancelled; stopping without them",
                len(tasks),
                ASYNC_SHUTDOWN_SECONDS,
            )
            return
        await asyncio.wait(tasks, timeout=remaining)
