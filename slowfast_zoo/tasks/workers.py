"""Work done ahead of the model: ``fn(item)`` for a list of items, in order, by worker threads or worker processes.

:class:`Prefetcher` feeds the one thread that runs the model. ``workers=0`` computes each item when the consumer
asks for it (in its thread); ``kind="thread"`` uses a thread pool; ``kind="process"`` uses processes started with
``spawn`` (a forked child would inherit the parent's OpenMP threads and CUDA state), each running torch with one
thread. At most ``workers + 1`` items are computed ahead of the consumer, so memory stays bounded when the model is
the slower side. Process results travel as :mod:`torch.multiprocessing` shared-memory tensors (one copy into shared
memory in the worker, none in the parent), or pickled when shared memory is short.

Each process handles one item at a time, so a worker that dies (killed, out of memory, a crash in native code)
is known by the item it held: ``on_crash(item, reason)`` makes that item's result and a fresh worker takes its
place. An exception raised by ``fn`` is raised in the consumer at that item's place in the order, as the thread
pool does. Closing the prefetcher (its ``with`` block ending, normally or by an exception or Ctrl-C) ends every
worker; workers ignore SIGINT so that the consumer alone decides.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

import torch
import torch.multiprocessing as tmp

from ..errors import SlowFastZooError

__all__ = ["Prefetcher", "WorkerCrashed", "WorkerKind", "portable", "worker_device"]

WorkerKind = Literal["thread", "process"]
#: seconds a worker gets to exit after SIGTERM before SIGKILL
_EXIT_GRACE_S = 5.0


class WorkerCrashed(SlowFastZooError, RuntimeError):
    """A worker process died while it computed an item (and no ``on_crash`` said what to do instead)."""


class _RemoteTraceback(SlowFastZooError):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


def _serve(conn: Connection, transport: str) -> None:
    """A worker process: ``(fn, item)`` in, ``("ok", result)`` or ``("error", exception, traceback)`` out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    torch.set_num_threads(1)
    while True:
        try:
            task = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn, item = pickle.loads(task)
            reply: tuple[Any, ...] = ("ok", fn(item))
        except Exception as e:  # sent to the parent, raised there
            reply = ("error", portable(e), traceback.format_exc())
        _send(conn, reply, transport)


def _send(conn: Connection, reply: tuple[Any, ...], transport: str) -> None:
    """``reply`` as shared-memory tensors (``shm``) or pickled bytes; pickled when shared memory fails."""
    if transport == "shm":
        try:
            conn.send(reply)  # torch's reductions move tensor storages into shared memory
            return
        except (RuntimeError, OSError):  # e.g. /dev/shm full ("No space left on device")
            pass
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # an unpicklable result
        data = pickle.dumps(("error", RuntimeError(f"a worker's result could not be sent: {e!r}"), ""))
    conn.send_bytes(data)


def worker_device(kind: WorkerKind, model_device: torch.device) -> torch.device:
    """Where workers of ``kind`` make their tensors: threads on the model's device, processes on the CPU (a spawned
    process holds no CUDA context of the parent's, and its tensors cross through shared host memory)."""
    return model_device if kind == "thread" else torch.device("cpu")


def portable(error: Exception) -> Exception:
    """``error`` if it survives pickling (it can cross to another process), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


class _Process:
    """One worker process and the item it is computing (``None`` when idle)."""

    def __init__(self, ctx: Any, transport: str) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, transport), name="slowfast-zoo-decode", daemon=True)
        self.process.start()
        child.close()
        self.task: tuple[int, Any] | None = None

    def death(self) -> str:
        """Why the process ended, in words."""
        self.process.join(_EXIT_GRACE_S)
        code = self.process.exitcode
        if code is None:
            return "the worker process stopped answering"
        if code < 0:
            try:
                return f"the worker process was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"the worker process was killed by signal {-code}"
        return f"the worker process exited with code {code}"

    def stop(self) -> None:
        """End the process now (SIGTERM, then SIGKILL), whatever it is doing."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(_EXIT_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process.close()


class Prefetcher:
    """``map(fn, items)`` computed ahead of the consumer by ``workers`` threads or processes, in input order.

    Use it as a context manager: the workers start at the first :meth:`map` and end with the block. For
    ``kind="process"``, ``fn`` and the items must pickle (module-level functions, ``functools.partial``).
    """

    def __init__(self, workers: int, kind: WorkerKind = "thread", *, transport: Literal["shm", "pickle"] = "shm"):
        if kind not in ("thread", "process"):
            raise ValueError(f"worker kind must be 'thread' or 'process', got {kind!r}")
        if transport not in ("shm", "pickle"):
            raise ValueError(f"transport must be 'shm' or 'pickle', got {transport!r}")
        self.workers, self.kind, self.transport = max(int(workers), 0), kind, transport
        self._threads: ThreadPoolExecutor | None = None
        self._processes: list[_Process] = []
        self._ctx = tmp.get_context("spawn")

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every worker (running items are abandoned)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None
        processes, self._processes = self._processes, []
        for p in processes:
            if p.process.is_alive() and p.task is None:
                with contextlib.suppress(OSError):
                    p.conn.close()  # an idle worker reads the end of its pipe and leaves
        for p in processes:
            if p.task is None:
                p.process.join(_EXIT_GRACE_S)
            p.stop()

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        on_crash: Callable[[Any, str], Any] | None = None,
    ) -> Iterator[Any]:
        """``fn(item)`` for every item, in order. ``on_crash(item, reason)`` stands for the result of an item whose
        worker process died (default: :class:`WorkerCrashed` is raised there)."""
        if self.workers == 0:
            return map(fn, items)
        if self.kind == "thread":
            return self._map_threads(fn, items)
        return self._map_processes(fn, items, on_crash)

    def _map_threads(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="slowfast-zoo-decode")
        queue: collections.deque[Any] = collections.deque()
        try:
            for item in items:
                queue.append(self._threads.submit(fn, item))
                if len(queue) > self.workers:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()

    def _map_processes(
        self, fn: Callable[[Any], Any], items: Iterable[Any], on_crash: Callable[[Any, str], Any] | None
    ) -> Iterator[Any]:
        while len(self._processes) < self.workers:
            self._processes.append(_Process(self._ctx, self.transport))
        source = enumerate(items)
        done: dict[int, tuple[Any, ...]] = {}
        sent = given = 0
        exhausted = False
        try:
            while True:
                while not exhausted and sent - given <= self.workers:  # at most workers + 1 ahead of the consumer
                    idle = next((p for p in self._processes if p.task is None), None)
                    if idle is None:
                        break
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    self._dispatch(idle, fn, index, item, done, on_crash)
                    sent += 1
                if given in done:
                    yield _outcome(done.pop(given))
                    given += 1
                elif exhausted and given == sent:
                    return
                else:
                    self._collect(done, on_crash)
        finally:
            for p in self._processes:
                if p.task is not None:  # abandoned mid-item: its late reply must not reach a later map
                    p.stop()
            self._processes = [p for p in self._processes if p.task is None]

    def _dispatch(
        self, p: _Process, fn: Callable[[Any], Any], index: int, item: Any, done: dict, on_crash: Any
    ) -> None:
        p.task = (index, item)
        try:
            p.conn.send_bytes(pickle.dumps((fn, item), protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError):  # it died while idle
            self._replace(p, done, on_crash)

    def _collect(self, done: dict, on_crash: Any) -> None:
        """Wait for a reply or a death among the busy workers."""
        busy = {p.conn: p for p in self._processes if p.task is not None}
        sentinels = {p.process.sentinel: p for p in busy.values()}
        for ready in wait([*busy, *sentinels]):
            p = busy.get(ready) or sentinels[ready]  # type: ignore[call-overload]
            if p.task is None:
                continue  # both its pipe and its sentinel were ready
            try:
                reply = p.conn.recv() if p.conn.poll() else None
            except (EOFError, OSError):
                reply = None
            if reply is None:
                self._replace(p, done, on_crash)
                continue
            done[p.task[0]] = reply
            p.task = None

    def _replace(self, p: _Process, done: dict, on_crash: Any) -> None:
        """A worker died: its item gets ``on_crash``'s result (or :class:`WorkerCrashed`); a new worker starts."""
        assert p.task is not None
        index, item = p.task
        reason = p.death()
        p.task = None
        p.stop()
        fresh = _Process(self._ctx, self.transport)
        self._processes[self._processes.index(p)] = fresh
        if on_crash is None:
            done[index] = ("error", WorkerCrashed(f"{reason} while computing {item!r}"), "")
        else:
            done[index] = ("ok", on_crash(item, reason))


def _outcome(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "ok":
        return reply[1]
    error = reply[1]
    if reply[2]:
        error.__cause__ = _RemoteTraceback(reply[2])
    raise error
