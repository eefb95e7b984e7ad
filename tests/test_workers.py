"""Fresh worker processes (``splitaudit.features.workers``): plain arrays over pipes, the pixel confirmation run on
them gives the answers of the in-process loop bit for bit, a failing job is an error in the caller, and no worker
outlives its caller (closed, interrupted with Ctrl-C, or killed). Real photos, real processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
from conftest import save, sigint_as_in_a_terminal

from splitaudit.features.workers import JOBS, WorkerError, WorkerPool, read_message, write_message
from splitaudit.neighbors.confirm import (JOB_PAIRS, WORKERS_FROM, confirm_on_workers, confirm_pairs, confirm_records,
                                          record_thumbnails)
from splitaudit.scan import scan

ROOT = Path(__file__).resolve().parents[1]


def test_a_message_carries_its_arguments_and_arrays_exactly() -> None:
    buf = io.BytesIO()
    arrays = {"f": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "i": np.arange(5, dtype=np.int64)[::-1],
              "u": np.zeros((0, 7), np.uint8), "b": np.array([True, False]), "d": np.array(np.pi)}
    write_message(buf, {"job": "x", "args": {"paths": ["a.jpg", None], "n": 3}}, arrays)
    write_message(buf, {"ok": True})
    buf.seek(0)
    header, got = read_message(buf)
    assert header == {"job": "x", "args": {"paths": ["a.jpg", None], "n": 3}}
    assert list(got) == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape and np.array_equal(got[name], a)
    assert read_message(buf) == ({"ok": True}, {})
    with pytest.raises(EOFError):
        read_message(buf)
    with pytest.raises(TypeError, match="only numbers"):
        write_message(io.BytesIO(), {}, {"o": np.array(["a", None], dtype=object)})


def _copies(photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Crops of real photos: each photo's copies (shifted by a few pixels, mirrored) and distinct tiles of it."""
    out = []
    for photo in photos.values():
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        photo = photo[..., :3]
        s = min(photo.shape[:2]) // 3
        for dy, dx in ((0, 0), (4, 6), (1, 1), (s, s), (s + 3, s - 2), (2 * s, 0), (0, 2 * s), (s, 0), (0, s)):
            out.append(np.ascontiguousarray(photo[dy : dy + s, dx : dx + s]))
        out.append(np.ascontiguousarray(photo[:s, :s][:, ::-1]))
    return out


def test_confirmation_on_workers_equals_the_loop_for_files_and_in_memory_images(photos: dict[str, np.ndarray],
                                                                               tmp_path: Path) -> None:
    """Every pair of real photo crops, saved as JPEG files (one of them not an image) and given as arrays: the
    workers' answers are the in-process loop's, bit for bit, whatever the jobs' cut."""
    images = _copies(photos)
    for i, im in enumerate(images):
        save(tmp_path / ("train" if i % 3 else "val") / f"{i:03d}.jpg", Image.fromarray(im))
    (tmp_path / "train" / "zzz.jpg").write_bytes(b"not a jpeg at all")
    on_disk = scan([str(tmp_path / "train"), str(tmp_path / "val")])
    in_memory = scan({"train": np.stack([np.asarray(_square(im)) for im in images[:30]]),
                      "val": np.stack([np.asarray(_square(im)) for im in images[30:]])})
    for ds in (on_disk, in_memory):
        n = len(ds.records)
        a, b = (x.ravel() for x in np.triu_indices(n, 1))
        assert len(a) > 2 * JOB_PAIRS  # several jobs on each worker
        want = confirm_pairs(a, b, record_thumbnails(ds, max_pixels=10**8), workers=1)
        got = confirm_on_workers(ds, a, b, max_pixels=10**8, workers=2)
        np.testing.assert_array_equal(got.ncc, want.ncc)
        np.testing.assert_array_equal(got.flipped, want.flipped)
        assert (want.ncc > 0.95).sum() >= len(photos) and (want.ncc < 0.8).sum() > len(a) // 2  # copies and others
    bad = [k for k, r in enumerate(on_disk.records) if r.path.endswith("zzz.jpg")][0]
    got = confirm_on_workers(on_disk, np.array([0, bad]), np.array([bad, 1]), max_pixels=10**8, workers=2)
    assert np.isnan(got.ncc).all()
    # the records' entry point sends this many pairs to the workers, with the same answers
    a, b = (x.ravel() for x in np.triu_indices(len(on_disk.records), 1))
    a, b = np.tile(a, -(-WORKERS_FROM // len(a))), np.tile(b, -(-WORKERS_FROM // len(b)))
    want = confirm_pairs(a, b, record_thumbnails(on_disk, max_pixels=10**8), workers=1)
    got = confirm_records(on_disk, a, b, max_pixels=10**8, workers=2)
    np.testing.assert_array_equal(got.ncc, want.ncc)


def _square(im: np.ndarray, side: int = 96) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BILINEAR))


def test_a_failing_job_is_an_error_in_the_caller_and_the_workers_stop() -> None:
    with pytest.raises(WorkerError, match="no job 'nope'"):
        with WorkerPool(1) as pool:
            list(pool.map("nope", [({}, {})]))
    pool = WorkerPool(2)
    procs = list(pool.procs)
    with pytest.raises(WorkerError, match="KeyError: 'pixels'"):
        with pool:  # the job's own error (arrays it needs are missing), raised here
            list(pool.map("confirm", [({"paths": [], "max_pixels": 1, "cache_bytes": 1}, {})] * 3))
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(WorkerError, match="KeyError: 'pixels'"), WorkerPool(0, local=1) as here:  # run in this process
        list(here.map("confirm", [({"paths": [], "max_pixels": 1, "cache_bytes": 1}, {})]))
    assert set(JOBS) == {"confirm", "register", "screen"}


class _FailsOnce(io.RawIOBase):
    """An output whose writes fail once, when they reach ``after`` bytes (as a pipe's write can fail, for a moment),
    and succeed before and after."""

    def __init__(self, after: int) -> None:
        self.data, self.after, self.failed = bytearray(), after, False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def,override]
        b = bytes(b)
        if not self.failed and len(self.data) + len(b) > self.after:
            self.failed = True
            self.data += b[: self.after - len(self.data)]
            raise OSError(5, "Input/output error")
        self.data += b
        return len(b)


def test_a_worker_whose_answer_fails_half_written_ends_and_writes_nothing_more(photos: dict[str, np.ndarray]) -> None:
    # A worker that sent an error message behind a half-written answer and went on left its caller reading that
    # message as the rest of the answer and waiting for bytes that never came (a 60k check hung so, once). It now
    # ends: the caller reads a closed pipe and names it.
    from splitaudit.features.workers import serve

    thumbs, _ = _stage_thumbs(photos)
    rng = np.random.default_rng(1)
    task = ({"side": 48, "mirror": True, "prune": True, "tries": [0.9, 1.3], "plain": False},
            {"thumbs": thumbs[:40], "ia": rng.integers(0, 40, 30), "ib": rng.integers(0, 40, 30)})
    inp = io.BytesIO()
    for _ in range(2):
        write_message(inp, {"job": "register", "args": task[0]}, task[1])
    whole = io.BytesIO()
    serve(io.BytesIO(inp.getvalue()), whole)  # both answered when nothing fails
    assert len(whole.getvalue()) > 2 * 600
    inp.seek(0)
    out = _FailsOnce(after=600)
    with pytest.raises(OSError, match="Input/output error"):
        serve(inp, out)
    assert bytes(out.data) == whole.getvalue()[:600]  # the first answer's start, and nothing after it


def test_a_worker_that_stops_answering_is_an_error_not_a_hang(photos: dict[str, np.ndarray], monkeypatch) -> None:
    # A worker stopped mid-job (SIGSTOP here; under py-spy a worker's answer once lost bytes on the way, and caller
    # and worker waited for each other): once it has used no CPU for STALL_S seconds while its answer is awaited,
    # the map raises and the worker is stopped, instead of waiting forever
    import threading

    import splitaudit.features.workers as W

    monkeypatch.setattr(W, "STALL_S", 1.0)
    thumbs, _ = _stage_thumbs(photos)
    rng = np.random.default_rng(2)
    heavy = ({"side": 48, "mirror": True, "prune": True, "tries": [0.9, 1.3], "plain": False},
             {"thumbs": thumbs, "ia": rng.integers(0, len(thumbs), 600), "ib": rng.integers(0, len(thumbs), 600)})
    with WorkerPool(1) as pool:
        worker = pool.procs[0]
        start = W._cpu_ticks(worker.pid)
        assert start is not None

        def stop_once_computing() -> None:  # after the worker has read its task and computed for a while
            while (W._cpu_ticks(worker.pid) or 0) < start + 5 and worker.poll() is None:
                time.sleep(0.01)
            os.kill(worker.pid, signal.SIGSTOP)

        stopper = threading.Thread(target=stop_once_computing)
        stopper.start()
        try:
            with pytest.raises(WorkerError, match="stopped answering"):
                list(pool.map("register", [heavy] * 3))
            assert worker.poll() is not None  # stopped by the pool, not left behind
        finally:
            stopper.join()
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGKILL)


_CALLER = textwrap.dedent("""
    import sys, numpy as np
    from splitaudit.scan import scan
    from splitaudit.neighbors.confirm import confirm_on_workers
    ds = scan([sys.argv[1] + "/train", sys.argv[1] + "/val"])
    n = len(ds.records)
    a, b = (x.ravel() for x in np.triu_indices(n, 1))
    for _ in range(1000):  # far longer than the test waits
        confirm_on_workers(ds, a, b, max_pixels=10**8, workers=2)
""")


def _workers_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid and b"splitaudit.features.workers" in cmd:
                out.append(int(entry))
    return out


def _alive(pids: list[int]) -> list[int]:
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(p)
        except OSError:
            pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_no_worker_outlives_its_caller(photos: dict[str, np.ndarray], tmp_path: Path, how: str) -> None:
    """A caller busy confirming on two workers (itself and a worker process), stopped by Ctrl-C (SIGINT to its whole process group, as a terminal
    sends it) or killed outright (SIGKILL: it cannot stop them itself): every worker is gone soon after."""
    for i, im in enumerate(_copies(photos)):
        save(tmp_path / ("train" if i % 3 else "val") / f"{i:03d}.jpg", Image.fromarray(im))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _CALLER, str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)
    workers: list[int] = []
    for _ in range(3000):  # up to a minute for the scan and the worker's start
        workers = _workers_of(proc.pid)
        if workers or proc.poll() is not None:
            break
        time.sleep(0.02)
    if len(workers) != 1:  # workers=2: one worker process, and the caller itself
        proc.kill()
        raise AssertionError((workers, proc.communicate()[1]))
    time.sleep(0.5)  # busy in a job
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    else:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    for _ in range(500):  # a worker ends within its job, or at once when killed with its caller
        if not _alive(workers):
            break
        time.sleep(0.02)
    assert _alive(workers) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_no_copy_stage_worker_outlives_the_command(photos: dict[str, np.ndarray], tmp_path: Path, how: str) -> None:
    """``splitaudit check`` on tiny images, whose copy stage screens and registers on a worker process, stopped by
    Ctrl-C (its whole process group) or SIGKILL while that worker runs: the worker is gone soon after."""
    from conftest import tiles_of

    n = 0
    for photo in photos.values():
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        for t in tiles_of(photo, 48, 150, step=12):
            save(tmp_path / ("val" if n % 2 else "train") / f"{n:04d}.png", t.resize((32, 32)))
            n += 1
    assert n >= 600  # more than one screen block and registration chunk: the stage's pool is used
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "splitaudit", "check", str(tmp_path / "train"), str(tmp_path / "val"),
           "--backbone", "none", "--cache-dir", str(tmp_path / "cache"), "-q"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_as_in_a_terminal)
    workers: list[int] = []
    for _ in range(6000):  # up to two minutes for the features and the copy stage's first block
        workers = _workers_of(proc.pid)
        if workers or proc.poll() is not None:
            break
        time.sleep(0.02)
    if len(workers) != 1:
        proc.kill()
        raise AssertionError((workers, proc.returncode, proc.communicate()[1][-2000:]))
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
    else:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    for _ in range(500):
        if not _alive(workers):
            break
        time.sleep(0.02)
    assert _alive(workers) == []


def test_a_worker_that_dies_is_an_error_with_its_reason(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    """A worker killed in the middle of its job (here: SIGKILL from outside, as the kernel's OOM killer would) stops
    the caller with an error naming it; the other worker is stopped too."""
    for i, im in enumerate(_copies(photos)):
        save(tmp_path / ("train" if i % 3 else "val") / f"{i:03d}.jpg", Image.fromarray(im))
    ds = scan([str(tmp_path / "train"), str(tmp_path / "val")])
    a, b = (x.ravel() for x in np.triu_indices(len(ds.records), 1))
    from contextlib import closing

    pool = WorkerPool(2)
    procs = list(pool.procs)
    tasks = [({"paths": [r.path for r in ds.records], "max_pixels": 10**8, "cache_bytes": 2**20},
              {"a": a, "b": b, "pixels": np.zeros(0, np.uint8), "pixel_shape": np.zeros((len(ds.records), 3), np.int64),
               "pixel_offset": np.zeros(len(ds.records), np.int64)})] * 6
    with pytest.raises(WorkerError, match=r"worker process stopped \(exit code -9\)"):
        with pool, closing(pool.map("confirm", tasks)) as answers:
            first = next(answers)
            assert np.isfinite(first["ncc"]).all() and len(first["ncc"]) == len(a)
            os.kill(procs[0].pid, signal.SIGKILL)
            for _ in answers:
                pass
    assert all(p.poll() is not None for p in procs)


def _stage_thumbs(photos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """32-px thumbnails (tiny images: the copy stage's pool runs their screen and registration) of overlapping tiles
    of the real photos (train), and eval images: copies of some (re-cropped by a few pixels, mirrored) and tiles of
    the photos' other parts (distinct, alike)."""
    from conftest import tiles_of

    train, val = [], []
    for photo in photos.values():
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        tiles = tiles_of(photo, 96, 24, step=40)
        train += [np.asarray(t.resize((32, 32))) for t in tiles[:16]]
        val += [np.asarray(t.resize((32, 32))) for t in tiles[16:]]
        for t in tiles[:8]:
            a = np.asarray(t)
            val.append(np.asarray(Image.fromarray(np.ascontiguousarray(a[3:, 2:])).resize((32, 32))))
            val.append(np.ascontiguousarray(np.asarray(t.resize((32, 32)))[:, ::-1]))
    thumbs = np.stack(train + val)
    return thumbs, np.r_[np.zeros(len(train), np.int64), np.ones(len(val), np.int64)]


@pytest.mark.parametrize("spill", [False, True])
def test_the_copy_stage_on_a_worker_process_equals_it_on_threads(photos: dict[str, np.ndarray], spill: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny images' screen blocks and registration chunks run on the pool (this process and one worker) as they run
    # on threads: the same answer to the last bit, the screen's images in memory or read by the worker from the
    # caller's temporary files; one pool serves the whole stage (its worker answers jobs from several calls)
    from splitaudit import memory
    from splitaudit.features.workers import local_pool
    from splitaudit.neighbors import screen, verify

    thumbs, split = _stage_thumbs(photos)
    monkeypatch.setattr(verify, "CHUNK", 32)  # many small jobs, as a large dataset has many large ones
    monkeypatch.setattr(screen, "BLOCK", 8)
    if spill:
        monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    threads = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2))
    pool = local_pool(2)
    assert pool is not None and pool.procs == []  # started by the first job that needs it
    with pool:
        on_pool = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2, pool=pool))
        worker = pool.procs[0]
        assert worker.poll() is None  # alive between the stage's calls: one start for the stage
    assert worker.poll() is not None
    assert pool.answered["processes"] >= 8 and pool.answered["here"] >= 8
    assert threads.keys() == on_pool.keys()
    for name in threads:
        np.testing.assert_array_equal(on_pool[name], threads[name], err_msg=name)
    copies = verify.copies_from_arrays(on_pool)
    assert copies is not None and copies.copy.sum() >= 8  # the planted copies found: a stage that did its work


def test_photos_copy_stage_runs_on_threads_and_starts_no_worker(photos: dict[str, np.ndarray]) -> None:
    # photos' thumbnails (64 px): threads register as fast as a worker would, which would only add memory
    from splitaudit.features.workers import local_pool
    from splitaudit.neighbors import verify

    thumbs, split = _stage_thumbs(photos)
    big = np.stack([np.asarray(Image.fromarray(t).resize((64, 64))) for t in thumbs])
    with local_pool(2) as pool:
        verify.find_copies(big, split, workers=2, pool=pool)
        assert pool.procs == [] and pool.answered == {"processes": 0, "here": 0}


def test_a_map_read_to_its_end_or_left_at_its_last_answer_keeps_the_workers(photos: dict[str, np.ndarray]) -> None:
    # a stage shares one pool between its calls; only a map stopped with jobs still running stops the workers
    from contextlib import closing

    from splitaudit.neighbors.verify import register_job

    thumbs, _ = _stage_thumbs(photos)
    rng = np.random.default_rng(0)
    task = ({"side": 48, "mirror": True, "prune": True, "tries": [0.9, 1.3], "plain": False},
            {"thumbs": thumbs[:40], "ia": rng.integers(0, 40, 30), "ib": rng.integers(0, 40, 30)})
    want = register_job(*task)
    with WorkerPool(1, local=1) as pool:
        worker = pool.procs[0]
        assert len(list(pool.map("register", [task] * 4))) == 4
        with closing(pool.map("register", [task] * 4)) as answers:
            for _, got in zip(range(4), answers):  # the generator left at its last answer, then closed
                for name in want:
                    np.testing.assert_array_equal(got[name], want[name])
        assert pool.procs == [worker] and worker.poll() is None
        heavy = (task[0], {"thumbs": thumbs, "ia": rng.integers(0, len(thumbs), 600),
                           "ib": rng.integers(0, len(thumbs), 600)})  # seconds a job: still running when abandoned
        with closing(pool.map("register", [task] + [heavy] * 5)) as answers:
            next(answers)  # abandoned with jobs queued or running: the workers are stopped
        assert worker.poll() is not None
