"""Fresh worker processes for array work that holds the GIL, fed over pipes with plain arrays (never pickles).

Threads cannot split work that is mostly small NumPy and SciPy calls (the pixel confirmation's crop views: two
threads ran 1.2x one); forked workers would, but a fork of a run's large process counts its pages once more per
worker in every process's resident memory. These workers are new interpreters (``python -m
splitaudit.features.workers``): they import only what their job needs (~50 MB each), never import the caller's
``__main__`` (a user's unguarded Keras script is not run again, as spawn would), and hold nothing but their job.

A job is a name from :data:`JOBS` (an allow-list: the worker imports nothing else), JSON arguments and NumPy
arrays; its answer is arrays. On the wire each message is an 8-byte length, a JSON header (arguments, and each
array's name, dtype and shape) and the arrays' bytes. A job that raises is an error in the caller
(:class:`WorkerError`); a worker that dies is one too, and so is one that uses no CPU for :data:`STALL_S` seconds while
its answer is awaited (Linux). Workers ignore Ctrl-C (the caller stops them), end when their
input closes, and are killed with the caller (Linux: ``PR_SET_PDEATHSIG``): none outlives the command.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np

from ..errors import SplitauditError
from ..memory import release_freed_memory

Arrays = dict[str, np.ndarray]
#: The jobs a worker runs: name -> ``module:function``, each ``function(args: dict, arrays: Arrays) -> Arrays``.
JOBS = {"confirm": "splitaudit.neighbors.confirm:confirm_job", "register": "splitaudit.neighbors.verify:register_job",
        "screen": "splitaudit.neighbors.screen:screen_job"}
_LENGTH = struct.Struct("<Q")
#: The array kinds a message carries: booleans, integers, floats (no objects, nothing that needs unpickling).
_KINDS = "biuf"


class WorkerError(SplitauditError):
    """A worker's job raised, or the worker process died."""


#: Seconds a worker may sit without using any CPU while its answer is awaited before the caller gives up on it
#: (Linux; a job computes or reads files all along). Under ``py-spy record --subprocesses`` a worker's answer once
#: in a few cold 60k checks lost ~24 kB between the worker's writes and the pipe (its own count of bytes written
#: was above the kernel's), and caller and worker then waited for each other forever; now that is an error.
STALL_S = 120.0
#: ... "no CPU" meaning less than this share of one core over those seconds: a debugger's or profiler's ptrace stops
#: add a clock tick now and then to a worker that waits (~1 in 10 s under py-spy at 50 samples a second), while a
#: job computes ~100 a second.
STALL_SHARE = 0.05


def _cpu_ticks(pid: int) -> int | None:
    """A process's user + system CPU time in clock ticks (``/proc``), or ``None`` where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


# -- the wire ----------------------------------------------------------------------------------------------------
def write_message(out: IO[bytes], header: dict[str, Any], arrays: Arrays | None = None) -> None:
    """One message: ``header`` (JSON-able) and ``arrays`` (numeric, any shape), flushed."""
    _send(out, *_frame(header, arrays))


def _frame(header: dict[str, Any], arrays: Arrays | None) -> tuple[bytes, list[np.ndarray]]:
    """A message's header bytes and its arrays, checked: what can be refused is refused before a byte is written."""
    parts = []
    for name, a in (arrays or {}).items():
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else np.array(a, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        if a.dtype.kind not in _KINDS:
            raise TypeError(f"array {name!r} has dtype {a.dtype}: only numbers and booleans go to a worker")
        parts.append(a)
    head = json.dumps({**header, "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in zip(arrays or {}, parts)]})
    return head.encode(), parts


def _send(out: IO[bytes], head: bytes, parts: list[np.ndarray]) -> None:
    out.write(_LENGTH.pack(len(head)))
    out.write(head)
    for a in parts:
        if a.size:  # (a view with a zero in its shape cannot be cast to bytes: nothing to write)
            out.write(memoryview(a.reshape(-1).view(np.uint8)))
    out.flush()


def _read_exact(inp: IO[bytes], n: int) -> bytes:
    data = inp.read(n)
    if data is None or len(data) != n:
        raise EOFError("the pipe closed mid-message" if data else "the pipe closed")
    return data


def read_message(inp: IO[bytes]) -> tuple[dict[str, Any], Arrays]:
    """The next message of :func:`write_message`; ``EOFError`` when the pipe closed."""
    (length,) = _LENGTH.unpack(_read_exact(inp, _LENGTH.size))
    header = json.loads(_read_exact(inp, length))
    arrays: Arrays = {}
    for name, dtype, shape in header.pop("arrays"):
        dt = np.dtype(dtype)
        if dt.kind not in _KINDS:
            raise ValueError(f"array {name!r} of dtype {dt} in a worker message")
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(_read_exact(inp, count * dt.itemsize) if count else b"", dt).reshape(shape)
    return header, arrays


# -- the worker side -----------------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the one that started it dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        pass


def _job(name: str):  # type: ignore[no-untyped-def]
    import importlib

    module, _, function = JOBS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The worker's loop: a job per message until the input closes."""
    import traceback

    while True:
        try:
            header, arrays = read_message(inp)
        except EOFError:
            return
        try:
            if header.get("job") not in JOBS:
                raise ValueError(f"no job {header.get('job')!r} (jobs: {sorted(JOBS)})")
            answer = _job(header["job"])(header.get("args", {}), arrays)
            message = _frame({"ok": True}, answer)
            del answer, arrays
        except Exception as e:  # sent back: the caller raises it
            message = _frame({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()},
                             None)
        # Not inside the try: a message that failed half-written must not be followed by an error message, which
        # the caller would read as the rest of the first one and then wait for bytes that never come. An error
        # here ends this process (its traceback in stderr); the caller reads the closed pipe and names it.
        _send(out, *message)
        del message
        # the job's working arrays, freed into this process's heap: handed back, so an idle worker holds only its
        # interpreter (~75 MB) while the caller works (a registration job's heap kept ~30 MB more)
        release_freed_memory()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the caller decides
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the caller died before the line above (this process was handed to another)
        return
    serve(sys.stdin.buffer, sys.stdout.buffer)


# -- the caller side -----------------------------------------------------------------------------------------------
def available() -> bool:
    """Whether fresh interpreters can be started here (an embedded or frozen Python may have no executable)."""
    return bool(sys.executable) and not getattr(sys, "frozen", False)


def local_pool(workers: int | None) -> WorkerPool | None:
    """The pool a stage's GIL-bound array jobs share on this machine: this process and ``workers - 1`` worker
    processes, started lazily; ``None`` where it cannot help (one worker, no interpreter to start). Close it
    (``with``) when the stage ends. (On Ray: :meth:`~splitaudit.features.engine.Engine.job_pool`.)"""
    from .runner import default_workers

    workers = default_workers() if workers is None else workers
    if workers <= 1 or not available():
        return None
    return WorkerPool(workers - 1, local=1, lazy=True)


class WorkerPool:
    """``workers`` fresh worker processes, and ``local`` threads of this process running the same jobs in it (this
    process is one worker less to start, and its own memory is already counted); :meth:`map` runs jobs on them. A
    context manager: leaving it stops them. ``lazy``: the processes start with the first :meth:`map` (a run that
    turns out too small for them never pays their start, ~0.3 s and ~75 MB each)."""

    def __init__(self, workers: int, local: int = 0, *, lazy: bool = False) -> None:
        self.local = local
        #: jobs answered so far: in worker processes, and in this process
        self.answered = {"processes": 0, "here": 0}
        self.procs: list[subprocess.Popen] = []
        self._errors: dict[int, IO[bytes]] = {}  # each worker's stderr, in a file: read when it dies
        self._todo = workers  # processes not started yet (``lazy``: started by the first map, if one comes)
        if not lazy:
            self._start()

    def _start(self) -> None:
        if not self._todo:
            return
        import splitaudit

        # the same splitaudit as the caller's (a source tree on sys.path, not an installed copy), BLAS on one thread
        # (the jobs' products are small; more threads would only fight the other workers for the cores)
        root = os.path.dirname(os.path.dirname(os.path.abspath(splitaudit.__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        todo, self._todo = self._todo, 0
        try:
            for _ in range(todo):
                err = tempfile.TemporaryFile()
                p = subprocess.Popen([sys.executable, "-m", "splitaudit.features.workers"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, close_fds=True)
                self.procs.append(p)
                self._errors[p.pid] = err
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, now: bool = False) -> None:
        """Stop every worker: its input closed (it ends after its job), killed if it has not ended within a second.
        ``now``: killed first (jobs abandoned: a feeder may be blocked writing to a worker that no longer reads, and
        holds the lock closing its input needs)."""
        if now:
            for p in self.procs:
                p.kill()
        for p in self.procs:
            if p.stdin is not None:
                try:
                    p.stdin.close()
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for err in self._errors.values():
            err.close()
        self.procs, self._errors, self._todo = [], {}, 0

    def _last_words(self, proc: subprocess.Popen) -> str:
        """The end of a dead worker's stderr (why it died), on one line."""
        err = self._errors.get(proc.pid)
        if err is None:
            return ""
        try:
            proc.wait(timeout=1.0)
            err.seek(0)
            lines = err.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return ""
        return f": {lines[-1]}" if lines else ""

    def map(self, job: str, tasks: Iterable[tuple[dict[str, Any], Arrays]]) -> Iterator[Arrays]:
        """Run ``job`` on each ``(args, arrays)`` of ``tasks``; the answers in task order. One task per worker at a
        time, each worker taking the next when it is free (tasks of unequal cost balance themselves); at most
        twice the workers' tasks are made ahead of the answers. Close the generator (``contextlib.closing``) where
        it may be left unfinished: its clean-up must not wait for the garbage collector, which swallows a Ctrl-C
        raised in it."""
        if job not in JOBS:
            raise WorkerError(f"no job {job!r} (jobs: {sorted(JOBS)})")
        self._start()
        todo: queue.Queue = queue.Queue(maxsize=max(1, len(self.procs) + self.local))
        answers: dict[int, tuple[bool, Any]] = {}
        done = threading.Condition()
        stop = threading.Event()

        def slot(run_one: Callable[[dict[str, Any], Arrays], tuple[bool, Any]], where: str) -> None:
            """Take the next task until the end mark; a failed task ends the slot (its error is the answer)."""
            while not stop.is_set():
                item = todo.get()
                if item is None:
                    return
                k, (args, arrays) = item
                got = run_one(args, arrays)
                with done:
                    answers[k] = got
                    self.answered[where] += got[0]
                    done.notify_all()
                if not got[0]:
                    return

        busy: dict[int, list] = {}  # worker pid -> [CPU ticks, time] at the start of the window, while a job runs
        per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

        def stalled() -> subprocess.Popen | None:
            """A worker with a job that used (almost) no CPU in the last :data:`STALL_S` seconds."""
            now = time.monotonic()
            for proc in self.procs:
                seen = busy.get(proc.pid)
                ticks = _cpu_ticks(proc.pid) if seen is not None else None
                if seen is None or ticks is None or seen[0] is None:
                    continue
                if now - seen[1] >= STALL_S:
                    if ticks - seen[0] < STALL_SHARE * STALL_S * per_second:
                        return proc
                    seen[0], seen[1] = ticks, now  # it computes: a new window
            return None

        def in_worker(proc: subprocess.Popen) -> Callable[[dict[str, Any], Arrays], tuple[bool, Any]]:
            def run_one(args: dict[str, Any], arrays: Arrays) -> tuple[bool, Any]:
                busy[proc.pid] = [_cpu_ticks(proc.pid), time.monotonic()]
                try:
                    write_message(proc.stdin, {"job": job, "args": args}, arrays)  # type: ignore[arg-type]
                    header, out = read_message(proc.stdout)  # type: ignore[arg-type]
                except (OSError, EOFError, ValueError) as e:
                    words = self._last_words(proc)
                    return False, WorkerError(f"a worker process stopped (exit code {proc.poll()}){words or ': ' + str(e)}")
                finally:
                    busy.pop(proc.pid, None)
                if header.get("ok"):
                    return True, out
                return False, WorkerError(
                    f"a worker's {job!r} job failed: {header.get('error')}\n{header.get('traceback', '')}".rstrip())

            return run_one

        def here(args: dict[str, Any], arrays: Arrays) -> tuple[bool, Any]:
            # a job in this process: it holds the GIL, beside the feeders' short waits on their pipes
            try:
                return True, _job(job)(args, arrays)
            except Exception as e:
                err = WorkerError(f"a {job!r} job failed: {type(e).__name__}: {e}")
                err.__cause__ = e
                return False, err

        threads = [threading.Thread(target=slot, args=(in_worker(p), "processes"), name="splitaudit-feed", daemon=True)
                   for p in self.procs]
        threads += [threading.Thread(target=slot, args=(here, "here"), name="splitaudit-job", daemon=True)
                    for _ in range(self.local)]
        for t in threads:
            t.start()
        sent = yielded = 0
        try:
            it = iter(tasks)
            exhausted = False
            for want in _count():
                # keep the queue full, never more than 2 x workers tasks beyond the answer wanted next
                while not exhausted and sent < want + 2 * (len(self.procs) + self.local):
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    while True:  # a bounded wait: a dead feeder must not leave this put hanging
                        try:
                            todo.put((sent, item), timeout=0.2)
                            break
                        except queue.Full:
                            if not any(t.is_alive() for t in threads):
                                raise _failure(answers) from None
                    sent += 1
                if want >= sent:
                    return
                with done:
                    while want not in answers:
                        if not any(t.is_alive() for t in threads):
                            raise _failure(answers)
                        done.wait(0.2)
                        stuck = stalled() if want not in answers else None
                        if stuck is not None:  # (leaving stops the workers: its feeder's wait ends too)
                            raise WorkerError(f"a worker process (pid {stuck.pid}) stopped answering: its {job!r} job "
                                              f"used almost no CPU for {STALL_S:.0f} s while its answer was awaited")
                    ok, value = answers.pop(want)
                if not ok:
                    raise value
                yielded += 1
                yield value
        finally:
            stop.set()
            dropped = 0
            while True:  # unblock the feeders: drop what is queued, then one end mark each
                try:
                    todo.get_nowait()
                    dropped += 1
                except queue.Empty:
                    break
            for _ in threads:
                try:
                    todo.put_nowait(None)
                except queue.Full:
                    break
            with done:
                running = sent - yielded - len(answers) - dropped
            if running > 0:
                self.close(now=True)  # a feeder still waits on its worker: stopping the workers ends that wait
            # else every feeder is idle and takes its end mark: the workers stay for the next map
            for t in threads:
                t.join()


def _failure(answers: dict[int, tuple[bool, Any]]) -> BaseException:
    """The first failed answer's error (what stopped the workers), else a plain one."""
    for k in sorted(answers):
        if not answers[k][0]:
            return answers[k][1]
    return WorkerError("every worker process stopped")


def _count() -> Iterator[int]:
    k = 0
    while True:
        yield k
        k += 1


if __name__ == "__main__":
    main()
