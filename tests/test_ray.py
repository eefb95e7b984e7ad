"""The Ray engine on a real local cluster: a head and a second worker node started with ``ray start``, the real
pipeline on a planted dataset, the report compared byte for byte with the local engine's; a worker process killed
mid-run; and the message when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import build_planted

import splitaudit
from splitaudit.cli import main
from splitaudit.features import extract, table

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not open port {port}")


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine (one CPU each, a small object store), torn down afterwards.

    ``ray start --block`` keeps each node's processes under our own child, so teardown stops exactly the processes
    this fixture started (``ray stop`` would stop every Ray process on the machine). Its own temp dir keeps other
    Ray sessions on the machine from finding (and joining) it.
    """
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="sa-ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    # A throw-away cluster on the loopback interface: no auth token to share between its processes and the driver.
    settings = dict(RAY_AUTH_MODE="disabled", RAY_memory_monitor_refresh_ms="0", RAY_USAGE_STATS_ENABLED="0")
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--block", "--disable-usage-stats"]
    procs = []
    try:
        head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 "--include-dashboard=false", f"--temp-dir={temp}", *common], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(head)
        _wait_port(port, head)
        address = f"127.0.0.1:{port}"
        procs.append(subprocess.Popen([RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                                      env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ray.shutdown()
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"py_modules": [str(ROOT / "splitaudit")], "excludes": ["__pycache__"]})
        deadline = time.monotonic() + 120
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(0.5)
        yield address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # our own session: the node's raylet, GCS and workers
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def planted_data(tmp_path_factory, photos):
    return build_planted(tmp_path_factory.mktemp("ray-data"), photos)


def _report(ds, **kw) -> str:
    return splitaudit.audit(*ds.splits, backbone="none", cache=False, **kw).to_json()


def test_ray_report_equals_local(cluster, planted_data):
    local = _report(planted_data)
    assert '"exact-duplicates"' in local and '"near-duplicates"' in local  # the planted leaks are found
    assert _report(planted_data, engine="ray", ray_address=cluster) == local


def test_ray_key_images_equal_local(cluster, photos, tmp_path):
    """Photos of 112 px get the keypoints' second opinion (their key images decoded by the cluster's workers): the
    report equals the local engine's, and the corner crops are found."""
    from test_keypoints import photo_windows, write_corner_crops

    tr, ev, crops = write_corner_crops(photos, photo_windows(photos), tmp_path)
    local = splitaudit.audit(str(tr), str(ev), backbone="none", cache=False)
    found = {os.path.basename(f.images[1].path) for f in local.findings if f.check == "near-duplicates"}
    assert len(found & set(crops)) >= 3, found
    ray_json = splitaudit.audit(str(tr), str(ev), backbone="none", cache=False, engine="ray",
                                ray_address=cluster).to_json()
    assert ray_json == local.to_json()


def test_ray_confirmation_thumbnails_go_to_a_file_and_equal_local(cluster, planted_data, monkeypatch):
    """The pixel confirmation's thumbnails decoded on the cluster: above SPILL_BYTES they come back a chunk per call
    into a temporary file (the driver never holds them whole), and every one equals the local decode."""
    from splitaudit import memory
    from splitaudit.features.engine import Engine
    from splitaudit.neighbors import confirm
    from splitaudit.scan import scan

    dataset = scan([str(p) for p in planted_data.splits])
    n = len(dataset.records)
    rows = np.arange(n)
    here = confirm.record_thumbnails(dataset, max_pixels=10**8)
    made = []
    real = memory.SpilledRows

    class Counted(real):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kw):  # type: ignore[no-untyped-def]
            made.append(args[0])
            super().__init__(*args, **kw)

    monkeypatch.setattr(memory, "SpilledRows", Counted)
    monkeypatch.setattr(memory, "SPILL_BYTES", 1)
    monkeypatch.setattr(confirm, "ENGINE_CHUNK", 7)  # several engine calls
    there = confirm.engine_thumbnails(dataset, rows, Engine("ray", cluster, None), max_pixels=10**8)
    assert made == [(n, confirm.THUMB, confirm.THUMB)]
    for i in rows.tolist():
        a, b = here(i), there(i)
        assert (a is None) == (b is None), i
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_ray_cli_and_cache(cluster, planted_data, tmp_path):
    """The CLI flags reach the engine; a warm re-check on Ray reads the driver's cache and sends nothing."""
    out_local, out_ray = tmp_path / "local.json", tmp_path / "ray.json"
    splits = [str(p) for p in planted_data.splits]
    cache = ["--cache-dir", str(tmp_path / "cache"), "--backbone", "none", "--format", "json"]
    assert main(["check", *splits, "--no-cache", "--backbone", "none", "--format", "json", "-o", str(out_local)]) == 1
    assert main(["check", *splits, *cache, "--engine", "ray", "--ray-address", cluster, "-o", str(out_ray)]) == 1
    assert out_ray.read_bytes() == out_local.read_bytes()
    ticks: dict[str, list[tuple[int, int]]] = {}
    report = splitaudit.audit(*planted_data.splits, backbone="none", cache_dir=tmp_path / "cache", engine="ray",
                              ray_address=cluster, progress=lambda stage, done, total: ticks.setdefault(stage, []).append((done, total)))
    assert report.to_json() == out_local.read_text()
    # Every stage answered from the cache in one tick: nothing was sent to the cluster.
    # Every per-image stage is announced at 0 and then answered whole, in one tick, from the cache.
    for name in ("hashing images", "making thumbnails"):
        t = ticks[name]
        assert t[-1][0] == t[-1][1] and all(done in (0, total) for done, total in t) and len(t) <= 2, ticks


def test_ray_from_pyproject(cluster, planted_data, tmp_path):
    """``engine`` and ``ray-address`` in [tool.splitaudit] select the cluster like the flags do."""
    config = tmp_path / "pyproject.toml"
    splits = ", ".join(f'"{p}"' for p in planted_data.splits)
    config.write_text(f'[tool.splitaudit]\nsplits = [{splits}]\nengine = "ray"\nray-address = "{cluster}"\n'
                      'backbone = "none"\nno-cache = true\nformat = "json"\n')
    out = tmp_path / "report.json"
    assert main(["check", "--config", str(config), "-o", str(out)]) == 1
    assert out.read_text() == _report(planted_data)
    config.write_text('[tool.splitaudit]\nengine = 1\n')
    assert main(["check", "--config", str(config)]) == 2


@dataclass(frozen=True)
class _KillOnce:
    """The hash stage's batch function, but the first call on the cluster kills its own worker process."""

    options: extract.HashOptions
    marker: str

    def __call__(self, batch):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return extract.extract_batch(batch, self.options)
        os.kill(os.getpid(), signal.SIGKILL)  # mid-run: other batches are in flight or done
        raise AssertionError("unreachable")


def test_killed_worker_gives_the_same_report(cluster, planted_data, tmp_path, monkeypatch):
    from ray import cloudpickle  # Ray's own copy pickles the job's functions

    marker = tmp_path / "killed"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the cluster cannot import this test module
    monkeypatch.setattr(table, "_Extract", lambda options: _KillOnce(options, str(marker)))
    try:
        got = _report(planted_data, engine="ray", ray_address=cluster)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a worker really died, and Ray retried its batch
    monkeypatch.undo()
    assert got == _report(planted_data)


def test_ray_properties_and_arrays(cluster, photos):
    """In-memory arrays travel through the object store; the properties stage runs on the cluster too."""
    rng = np.random.default_rng(0)
    tiles = np.stack([photos["astronaut"][y : y + 32, x : x + 32] for y in range(0, 256, 32) for x in range(0, 256, 32)])
    train, val = tiles[:48], np.concatenate([tiles[48:], tiles[:3]])  # three copies leak into val
    y_train, y_val = rng.integers(0, 3, len(train)), rng.integers(0, 3, len(val))
    kw = dict(backbone="none", cache=False, select=["exact-duplicates", "image-properties"])
    local = splitaudit.audit((train, y_train), (val, y_val), **kw).to_json()
    assert '"exact-duplicates"' in local
    assert splitaudit.audit((train, y_train), (val, y_val), engine="ray", ray_address=cluster, **kw).to_json() == local


def test_missing_ray_is_a_clear_usage_error(planted_data):
    """Without Ray installed, --engine ray exits 2 with one line saying what to install."""
    code = ("import sys; sys.modules['ray'] = None\n"  # what a Python without Ray sees: import ray fails
            "from splitaudit.cli import main\n"
            f"sys.exit(main(['check', *{[str(p) for p in planted_data.splits]!r}, '--engine', 'ray', '--no-cache']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 2
    assert "pip install 'splitaudit[ray]'" in run.stderr and "Traceback" not in run.stderr


def test_engine_parameter_is_validated():
    with pytest.raises(splitaudit.errors.InvalidParameterError, match="'engine'"):
        splitaudit.audit(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), engine="spark")
    with pytest.raises(splitaudit.errors.InvalidParameterError, match="'ray_address'"):
        splitaudit.audit(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), engine="ray", ray_address="")


def test_ray_embeddings_equal_local(cluster, planted_data):
    """The embedding stage on Ray actors (the backbone loaded once per actor) and the pixel confirmation decoded on
    the cluster: the same report as the local engine."""
    kw = dict(cache=False, select=["near-duplicates", "similar-images"])
    local = splitaudit.audit(*planted_data.splits, **kw).to_json()
    assert splitaudit.audit(*planted_data.splits, engine="ray", ray_address=cluster, **kw).to_json() == local


def test_sharded_searches_merge_exactly(cluster):
    """Binary search sharded by split (run as Ray tasks) gives exactly the unsharded pairs; the dense top-k merged
    across shards gives the unsharded neighbours."""
    from splitaudit.features.engine import Engine
    from splitaudit.neighbors import dense
    from splitaudit.neighbors.binary import hash_pairs

    rng = np.random.default_rng(1)
    n = 3000
    ph = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    dh = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64)
    near = rng.choice(n, 400, replace=False)  # 200 pairs a few bits apart, within and across splits
    for x, y in near.reshape(-1, 2):
        bits = np.uint64(0)
        for b in rng.choice(64, rng.integers(0, 6), replace=False):
            bits |= np.uint64(1) << np.uint64(b)
        ph[y], dh[y] = ph[x] ^ bits, dh[x] ^ (bits >> np.uint64(1))
    flip_p, flip_d = ph[::-1].copy(), dh[rng.permutation(n)]  # mirrored hashes: any other codes will do
    split = rng.integers(0, 3, n)
    ok = rng.random(n) > 0.05
    args = (ph, dh, flip_p, flip_d, ok)
    whole = hash_pairs(*args, max_phash=8, max_dhash=10)
    assert len(whole) >= 150
    for starmap in (None, Engine("ray", cluster).starmap):
        sharded = hash_pairs(*args, max_phash=8, max_dhash=10, shards=split, starmap=starmap)
        for name, column in whole.to_arrays().items():
            np.testing.assert_array_equal(getattr(sharded, name), column, err_msg=name)

    emb = rng.standard_normal((n, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    base, query = np.flatnonzero(split < 2), np.flatnonzero(split == 2)
    sims, ids = dense.knn(emb[base], emb[query], 10)
    s2, g = dense.sharded_knn(emb, [np.flatnonzero(split == 0), np.flatnonzero(split == 1)], query, 10,
                              Engine("ray", cluster).starmap)
    np.testing.assert_array_equal(base[ids], g)
    np.testing.assert_allclose(s2, sims, atol=1e-6)  # BLAS blocking may change the last bit of a cosine


def test_copy_stage_jobs_run_as_the_clusters_tasks(cluster, photos, monkeypatch):
    """Tiny images' screen and registration jobs, and the pixel confirmation's, run as the cluster's tasks (its
    nodes cannot read the driver's temporary files, so the jobs get their rows): every column equals the one the
    local worker processes give, and the tasks answered every job."""
    from test_workers import _copies, _stage_thumbs

    from splitaudit import memory
    from splitaudit.features.engine import Engine
    from splitaudit.features.workers import local_pool
    from splitaudit.neighbors import confirm, screen, verify
    from splitaudit.scan import scan

    thumbs, split = _stage_thumbs(photos)
    monkeypatch.setattr(verify, "CHUNK", 32)  # many small jobs, as a large dataset has many large ones
    monkeypatch.setattr(screen, "BLOCK", 8)
    monkeypatch.setattr(memory, "SPILL_BYTES", 0)  # the screen's images in temporary files, as at scale
    with local_pool(2) as pool:
        here = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2, pool=pool))
    engine = Engine("ray", cluster)
    with engine.job_pool() as pool:
        assert not pool.files_shared  # a cluster joined by address
        there = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2, pool=pool))
        assert pool.answered["tasks"] >= 16
    assert here.keys() == there.keys()
    for name in here:
        np.testing.assert_array_equal(there[name], here[name], err_msg=name)
    assert verify.copies_from_arrays(there).copy.sum() >= 8  # the planted copies found: the stage did its work

    from PIL import Image

    arrays = [np.asarray(Image.fromarray(im).resize((96, 96))) for im in _copies(photos)]
    ds = scan({"train": np.stack(arrays[: len(arrays) // 2]), "val": np.stack(arrays[len(arrays) // 2 :])})
    a, b = (x.ravel() for x in np.triu_indices(len(ds.records), 1))
    monkeypatch.setattr(confirm, "JOB_PAIRS", 128)
    want = confirm.confirm_records(ds, a, b, max_pixels=10**8, workers=2)
    with engine.job_pool() as pool:
        got = confirm.confirm_on_workers(ds, a, b, max_pixels=10**8, workers=2, pool=pool)
        assert pool.answered["tasks"] == -(-len(a) // 128)
    monkeypatch.setattr(confirm, "WORKERS_FROM", 64)  # the records' entry point sends these pairs to the cluster
    for got in (got, confirm.confirm_records(ds, a, b, max_pixels=10**8, workers=2, engine=engine)):
        np.testing.assert_array_equal(got.ncc, want.ncc)
        np.testing.assert_array_equal(got.flipped, want.flipped)
    assert (want.ncc > 0.95).sum() >= len(photos)  # the copies among them


def test_a_job_whose_worker_is_killed_is_retried_with_the_same_answer(cluster, photos, tmp_path, monkeypatch):
    """The copy stage's first job on the cluster kills its own worker process: Ray retries it (the jobs are pure),
    and every column of the stage equals the local worker processes' answer."""
    from ray import cloudpickle
    from test_workers import _stage_thumbs

    from splitaudit.features import ray_engine
    from splitaudit.features.engine import Engine
    from splitaudit.features.workers import local_pool
    from splitaudit.neighbors import screen, verify

    thumbs, split = _stage_thumbs(photos)
    monkeypatch.setattr(verify, "CHUNK", 32)
    monkeypatch.setattr(screen, "BLOCK", 8)
    with local_pool(2) as pool:
        here = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2, pool=pool))
    marker = str(tmp_path / "killed")
    real = ray_engine.run_job

    def kill_once(name, args, arrays):  # type: ignore[no-untyped-def]
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return real(name, args, arrays)
        os.kill(os.getpid(), signal.SIGKILL)  # mid-stage: other jobs are queued or done
        raise AssertionError("unreachable")

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the cluster cannot import this test module
    monkeypatch.setattr(ray_engine, "run_job", kill_once)
    try:
        with Engine("ray", cluster).job_pool() as pool:
            there = verify.copies_to_arrays(verify.find_copies(thumbs, split, workers=2, pool=pool))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert os.path.exists(marker)  # a worker really died, and Ray ran its job again
    for name in here:
        np.testing.assert_array_equal(there[name], here[name], err_msg=name)


@dataclass(frozen=True)
class _BatchShape:
    """A batch function whose output depends on how the rows were cut into batches: each row gets its batch's first
    value and length (a wrong cut on a worker changes the output)."""

    def __call__(self, batch):
        v = batch["v"]
        return {"first": np.full(len(v), v[0]), "size": np.full(len(v), len(v)), "label": batch["label"]}


def test_ray_cuts_blocks_into_the_local_batches(cluster):
    """A Ray task gets a whole block of several batches and cuts it on the worker: every batch holds the rows the
    local pool's does, over several blocks and a short last batch; texts come back shared."""
    from ray import cloudpickle

    from splitaudit.features.engine import Engine
    from splitaudit.features.ray_engine import batches_per_block
    from splitaudit.features.runner import map_batches

    n, size = 1003, 8
    cols = {"v": np.arange(n, dtype=np.int64) * 3, "label": np.array([f"x{i % 7}" if i % 5 else None for i in range(n)], dtype=object)}
    assert -(-n // (size * batches_per_block(n, size, False, 2))) > 2  # several blocks on the 2-CPU cluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        got = Engine("ray", cluster).map(_BatchShape(), cols, batch_size=size)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    want = map_batches(_BatchShape(), cols, batch_size=size, workers=1)
    assert set(got) == set(want)
    for k in want:
        assert got[k].tolist() == want[k].tolist(), k
    # Equal texts come back as one object each, as from the local pool (Arrow makes one per row: 50 bytes a row
    # and text column, ~150 MB of a 1M-image hash stage's driver).
    assert len({id(x) for x in got["label"] if x is not None}) == 7


def test_task_blocks_follow_the_cluster_size():
    """About TASK_WAVES task blocks per CPU, within the bounds; actors keep the fixed block."""
    from splitaudit.features.ray_engine import BATCHES_PER_BLOCK, MAX_BATCHES_PER_TASK, TASK_WAVES, batches_per_block

    assert batches_per_block(20_000, 64, False, 2) == -(-313 // (2 * TASK_WAVES))  # 40 batches: 8 blocks
    assert batches_per_block(500, 64, False, 2) == BATCHES_PER_BLOCK  # never below the fixed block
    assert batches_per_block(10**7, 64, False, 2) == MAX_BATCHES_PER_TASK
    assert batches_per_block(20_000, 64, False, 1000) == BATCHES_PER_BLOCK
    assert batches_per_block(20_000, 64, True, 2) == BATCHES_PER_BLOCK


def _in_a_fresh_process(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` run by a new Python that starts its own local Ray runtime (this module's driver is joined to the test
    cluster), this tree's splitaudit first on its path; it must exit 0."""
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_a_runtime_started_here_is_ready_before_its_first_execution(tmp_path):
    """A local runtime that ``connect`` starts (in a fresh process: this module's driver is joined to the test
    cluster) already has Ray Data's own actors and prepared workers before any dataset runs, and Ray Data's
    per-operator reservation is off; the first map then gives the local columns."""
    out = _in_a_fresh_process(tmp_path, 
        "import json, ray\n"
        "from ray.data import DataContext\n"
        "from splitaudit.features import ray_engine\n"
        "ray_engine.connect(None)\n"
        "actors = [(n, s) for n, s in (('datasets_stats_actor', '_dataset_stats_actor'),\n"
        "          ('AutoscalingCoordinator', 'AutoscalingCoordinator'), ('ActorLocationTracker', 'ActorLocationTracker'))]\n"
        "found = []\n"
        "for name, space in actors:\n"
        "    try:\n"
        "        ray.get_actor(name, namespace=space); found.append(name)\n"
        "    except ValueError:\n"
        "        pass\n"
        "ray.get(ray_engine._preparing)\n"
        "print(json.dumps({'found': found, 'prepared': len(ray_engine._preparing), 'here': ray_engine._runtime['here'],\n"
        "                  'reservation': DataContext.get_current().op_resource_reservation_enabled}))\n")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"found": ["datasets_stats_actor", "AutoscalingCoordinator", "ActorLocationTracker"],
                   "prepared": got["prepared"], "here": True, "reservation": False} and got["prepared"] >= 1


def test_a_failed_job_is_one_error_and_ray_prints_no_unread_failures(tmp_path):
    """A job that raises on the cluster is one WorkerError naming it; the pool's other tasks, cancelled or failed
    the same way, are read before it is raised, so Ray prints no "Unhandled error" tracebacks after it."""
    out = _in_a_fresh_process(tmp_path, 
        "import gc, time\n"
        "from splitaudit.features.engine import Engine\n"
        "from splitaudit.features.workers import WorkerError\n"
        "pool = Engine('ray').job_pool()\n"
        "try:\n"
        "    list(pool.map('register', [({'side': 64}, {}) for _ in range(8)]))\n"
        "except WorkerError as e:\n"
        "    print('error:', e)\n"
        "gc.collect()\n"
        "time.sleep(2)\n")
    assert "error: a 'register' job failed on the cluster: KeyError: 'thumbs'" in out.stdout
    assert "Unhandled error" not in out.stderr, out.stderr[-2000:]
