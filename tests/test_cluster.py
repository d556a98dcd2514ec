"""``cluster.py``: the rules that need no remote cluster -- the no-worker timeout, TLS
security, worker counts, :func:`compute` and :func:`compute_each` on the threaded and
synchronous schedulers and on a real in-process LocalCluster, what a lazy block leaves
unstarted, and :func:`check_workers_see`.

Dying and lost workers, unreachable and TLS schedulers, Ctrl-C are in ``test_hangs.py`` and
``test_remote_cluster.py``; a lazy block starting its cluster at the first computation is in
``test_lazy.py``.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import subprocess
import sys
import threading

import dask
import dask.array as da
import distributed  # noqa: F401  (its configuration defaults, before dask.config.set below)
import numpy as np
import pytest

from pupsnr_dask import cluster
from pupsnr_dask.cluster import Kubernetes, compute, compute_each, connect

LOCAL = {"processes": False, "quiet": True, "dashboard_address": ":0"}


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise ZeroDivisionError(f"task {x} divided by zero")


_GATE = threading.Event()  # holds _held's tasks (in-process workers share this module)
_HELD_DONE: list[int] = []


def _held(x: int) -> int:
    _GATE.wait(60)
    _HELD_DONE.append(x)
    return x


def _worker_address(_: object = None) -> str:
    from distributed import get_worker

    return get_worker().address  # ValueError outside a worker


# -- the no-worker timeout -------------------------------------------------------------------
def test_no_worker_timeout_is_the_value_else_the_environment_else_the_default(monkeypatch):
    monkeypatch.delenv("PUPSNR_NO_WORKER_TIMEOUT", raising=False)
    assert cluster.resolve_no_worker_timeout() == cluster.DEFAULT_NO_WORKER_TIMEOUT == 60.0
    assert cluster.resolve_no_worker_timeout(2.5) == 2.5
    monkeypatch.setenv("PUPSNR_NO_WORKER_TIMEOUT", "7")
    assert cluster.resolve_no_worker_timeout() == 7.0
    assert cluster.resolve_no_worker_timeout(0.25) == 0.25  # the value wins
    monkeypatch.setenv("PUPSNR_NO_WORKER_TIMEOUT", "")  # set but empty: as if unset
    assert cluster.resolve_no_worker_timeout() == 60.0


@pytest.mark.parametrize("value", [0, -1, math.nan, "soon", [3]])
def test_no_worker_timeout_refuses_what_is_not_a_positive_number(value, monkeypatch):
    monkeypatch.delenv("PUPSNR_NO_WORKER_TIMEOUT", raising=False)
    with pytest.raises(ValueError, match=r"^no_worker_timeout must be a positive number"):
        cluster.resolve_no_worker_timeout(value)


def test_no_worker_timeout_names_the_environment_variable_it_refuses(monkeypatch):
    monkeypatch.setenv("PUPSNR_NO_WORKER_TIMEOUT", "-3")
    with pytest.raises(ValueError, match=r"^\$PUPSNR_NO_WORKER_TIMEOUT must be .*got '-3'"):
        cluster.resolve_no_worker_timeout()


# -- TLS security ----------------------------------------------------------------------------
@pytest.fixture()
def pems(tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}


def test_make_security_without_files_is_dask_configuration_or_an_error():
    with dask.config.set({"distributed.comm.tls.ca-file": None}):
        assert cluster.make_security("tcp://127.0.0.1:8786") is None
        with pytest.raises(ValueError, match="uses TLS: give tls_ca_file and tls_cert"):
            cluster.make_security("tls://127.0.0.1:8786")
    with dask.config.set({"distributed.comm.tls.ca-file": "/etc/ca.pem"}):
        assert cluster.make_security("tls://127.0.0.1:8786") is None  # configured: Dask's


def test_make_security_with_files_needs_a_tls_address_a_ca_and_a_cert(pems):
    with pytest.raises(ValueError, match="need a tls:// scheduler address"):
        cluster.make_security("tcp://h:8786", tls_ca_file=pems["ca"], tls_cert=pems["cert"])
    with pytest.raises(ValueError, match="tls_cert is required"):
        cluster.make_security("tls://h:8786", tls_ca_file=pems["ca"])
    with pytest.raises(ValueError, match="tls_ca_file is required"):
        cluster.make_security("tls://h:8786", tls_cert=pems["cert"], tls_key=pems["key"])
    with pytest.raises(FileNotFoundError, match=r"tls_key '.*nokey.pem' is not a file"):
        cluster.make_security(
            "tls://h:8786", pems["ca"], pems["cert"], pems["cert"].replace("cert", "nokey")
        )


def test_make_security_with_files_requires_encryption(pems):
    security = cluster.make_security("tls://h:8786", pems["ca"], pems["cert"], pems["key"])
    assert security.require_encryption is True
    assert (security.tls_ca_file, security.tls_client_cert, security.tls_client_key) == (
        pems["ca"],
        pems["cert"],
        pems["key"],
    )


# -- connect's arguments, checked before anything starts -------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_workers": 0}, "n_workers must be at least 1, got 0"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"timeout": math.nan}, "timeout must be a positive number of seconds"),
        ({"no_worker_timeout": -1}, "no_worker_timeout must be a positive number"),
        (
            {"kubernetes": Kubernetes(image="x"), "scheduler": "tcp://h:1"},
            "kubernetes and scheduler='tcp://h:1' exclude each other",
        ),
    ],
)
def test_connect_refuses_bad_arguments_before_starting_anything(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with connect(**LOCAL, **kwargs):
            pytest.fail("the block ran")


def test_connect_names_the_scheduler_from_the_environment_it_refuses(monkeypatch):
    monkeypatch.setenv("PUPSNR_SCHEDULER", "tcp://h:2")
    with pytest.raises(ValueError, match=r"kubernetes and \$PUPSNR_SCHEDULER='tcp://h:2' exclude"):
        with connect(kubernetes=Kubernetes(image="x"), **LOCAL):
            pytest.fail("the block ran")


# -- worker counts ---------------------------------------------------------------------------
def test_default_n_workers_is_the_cores_this_process_may_use():
    assert cluster.default_n_workers() == len(os.sched_getaffinity(0))
    one = min(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{one}}}); "
        "from pupsnr_dask.cluster import default_n_workers; print(default_n_workers())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"  # pinned to one core: one worker, whatever the machine


@pytest.mark.parametrize("name", ["sync", "synchronous", "single-threaded"])
def test_parallelism_of_the_synchronous_scheduler_is_one(name):
    with dask.config.set(scheduler=name, num_workers=8):
        assert cluster.parallelism() == 1


def test_parallelism_of_threads_is_num_workers_else_the_cores():
    with dask.config.set(scheduler="threads", num_workers=3):
        assert cluster.parallelism() == 3
    with dask.config.set(scheduler="threads", num_workers=None):
        assert cluster.parallelism() == os.cpu_count()


# -- compute and compute_each without a cluster ----------------------------------------------
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_compute_gives_each_result_in_order(scheduler, capsys):
    values = np.arange(30.0).reshape(5, 6)
    array = da.from_array(values, chunks=(2, 3))
    tasks = [dask.delayed(_square)(i) for i in range(4)]
    with dask.config.set(scheduler=scheduler):
        total, doubled, *squares = compute(array.sum(), array * 2, *tasks, progress=False)
        each = compute_each(tasks, progress=False)
    assert total == values.sum()
    np.testing.assert_array_equal(doubled, values * 2)
    assert squares == [0, 1, 4, 9] and each == [0, 1, 4, 9]
    assert capsys.readouterr().err == ""  # no progress asked: nothing printed


def test_compute_with_progress_prints_its_label_then_a_bar(capsys):
    with dask.config.set(scheduler="sync"):
        (value,) = compute(dask.delayed(_square)(3), progress=True, label="squaring")
    err = capsys.readouterr().err
    assert value == 9
    assert err.startswith("pupsnr: squaring\n")
    assert "100% Completed" in err
    with dask.config.set(scheduler="sync"):
        compute(dask.delayed(_square)(3), progress=False, label="squaring")
    assert capsys.readouterr().err == ""  # the label goes with the bar


def test_compute_each_raises_a_task_error_on_the_threaded_scheduler():
    tasks = [dask.delayed(_square)(2), dask.delayed(_fail)(1)]
    with dask.config.set(scheduler="threads"):
        with pytest.raises(ZeroDivisionError, match="task 1 divided by zero"):
            compute_each(tasks, progress=False)


# -- on a real in-process LocalCluster -------------------------------------------------------
def _profiling(dask_worker) -> bool:
    return "profile" in dask_worker.periodic_callbacks


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_the_local_workers_profiler_is_off_unless_the_environment_turns_it_on(
    processes, monkeypatch
):
    """It costs ingest ~5 % (RESULTS.md); ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED``
    set leaves it to Dask's configuration (on by default)."""
    options = {**LOCAL, "processes": processes}
    monkeypatch.delenv(cluster.PROFILE_ENV, raising=False)
    with connect(n_workers=1, **options, lazy=False) as client:
        assert list(client.run(_profiling).values()) == [False]
    monkeypatch.setenv(cluster.PROFILE_ENV, "True")
    with connect(n_workers=1, **options, lazy=False) as client:
        assert list(client.run(_profiling).values()) == [True]


def _periods(dask_worker) -> tuple[float, float, float]:
    """How often the server checks its event loop and samples the system (ms), and how often a
    worker checks its memory (s)."""
    pc = dask_worker.periodic_callbacks
    memory = getattr(dask_worker, "memory_manager", None)
    return (
        pc["tick"].callback_time,
        pc["monitor"].callback_time,
        getattr(memory, "memory_monitor_interval", None),
    )


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_the_local_cluster_checks_its_event_loops_less_often_unless_configured(processes):
    """Each 20 ms event-loop check and 0.5 s system sample cost ingest 0.3 s on two cores
    (RESULTS.md): 1 s and 2 s on the scheduler and every worker; a user's setting wins."""
    options = {**LOCAL, "processes": processes}
    with connect(n_workers=1, **options, lazy=False) as client:
        (worker,) = client.run(_periods).values()
        scheduler = client.run_on_scheduler(_periods)
    assert worker[:2] == scheduler[:2] == (1000, 2000)
    assert worker[2] == 0.1  # the memory check that kills a worker at its limit: kept
    with dask.config.set({"distributed.admin.tick.interval": "50ms"}):
        with connect(n_workers=1, **options, lazy=False) as client:
            (worker,) = client.run(_periods).values()
    assert worker[:2] == (50, 2000)


#: Prints how many MiB this process gives back to the system when it frees a 24 MiB array:
#: all of it with glibc's defaults (the array is mmapped: above the 128 KiB threshold), none
#: with LOCAL_WORKER_ENV's (mmap threshold 32 MiB: from the heap, kept there for the next
#: arrays, trim threshold 64 MiB). ``{setup}``: what runs first.
_HEAP_PROBE = """
import os
import numpy as np
{setup}
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
array = np.ones(24 << 20, np.uint8)
before = resident()
del array
print((before - resident()) >> 20)
"""


def _heap_given_back(setup: str = "", env: dict[str, str] | None = None) -> int:
    code = _HEAP_PROBE.format(setup=setup)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=environ | (env or {}), check=True)  # fmt: skip
    return int(out.stdout.split()[-1])


GLIBC_DEFAULTS = {"MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_malloc_keeps_freed_heap_as_the_worker_processes_do_unless_the_environment_says():
    """The malloc settings of the local worker processes, for a worker of threads in this
    process: 0.3 s less system time and 2.3x fewer page faults in `pupsnr run` of 2,000 images
    (RESULTS.md). A setting in the environment is the user's: left as it is."""
    tune = "from pupsnr_dask.cluster import tune_malloc\nassert tune_malloc()"
    assert _heap_given_back() >= 16  # glibc's defaults: the freed array goes back at once
    assert _heap_given_back(tune) <= 4
    assert _heap_given_back(tune, env=GLIBC_DEFAULTS) >= 16


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_local_cluster_of_threads_gives_this_process_the_workers_malloc_settings():
    start = (
        "from pupsnr_dask.cluster import connect\n"
        "with connect(n_workers=1, processes=False, quiet=True, dashboard_address=':0'):\n"
        "    pass"
    )
    assert _heap_given_back(start) <= 4
    assert _heap_given_back(start, env=GLIBC_DEFAULTS) >= 16  # the probe still tells


def _heartbeat_error(err: BaseException | None, message: str) -> logging.LogRecord:
    """The record distributed's Worker.heartbeat logs with ``logger.exception``."""
    exc_info = (type(err), err, err.__traceback__) if err is not None else None
    return logging.LogRecord("distributed.worker", logging.ERROR, "worker.py", 1206, message,
                             None, exc_info)  # fmt: skip


def test_a_heartbeat_cut_short_by_the_workers_own_close_is_not_logged_and_nothing_else():
    from distributed.comm.core import CommClosedError

    def raised(err: BaseException) -> BaseException:
        try:
            raise err
        except BaseException as caught:
            return caught

    closing = raised(CommClosedError("ConnectionPool closing."))
    message = "Failed to communicate with scheduler during heartbeat."
    keep = cluster._HEARTBEAT_CUT_BY_CLOSE.filter
    assert not keep(_heartbeat_error(closing, message))
    assert keep(
        _heartbeat_error(raised(OSError("Timed out trying to connect to 'tcp://x'")), message)
    )
    assert keep(_heartbeat_error(closing, "Unexpected exception during heartbeat. Closing worker."))
    assert keep(_heartbeat_error(None, message))


def _filters_heartbeat_cut_by_close(dask_worker) -> bool:
    return cluster._HEARTBEAT_CUT_BY_CLOSE in logging.getLogger("distributed.worker").filters


def _preloads(dask_worker) -> list[str]:
    return [preload.name for preload in dask_worker.preloads]


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_the_local_workers_install_that_filter_as_they_start(processes):
    with dask.config.set({"distributed.worker.preload": "pupsnr_dask.defaults"}):  # as in $DASK_
        with connect(n_workers=1, **{**LOCAL, "processes": processes}, lazy=False) as client:
            assert list(client.run(_filters_heartbeat_cut_by_close).values()) == [True]
            (preload,) = client.run(_preloads).values()
    assert preload == ["pupsnr_dask.defaults", "pupsnr_dask.cluster"]  # the user's kept


def test_compute_on_a_local_cluster_runs_there_and_gives_each_result(capsys):
    values = np.arange(24.0).reshape(4, 6)
    array = da.from_array(values, chunks=(1, 6))
    before = dask.config.get("scheduler", None)
    with connect(n_workers=3, **LOCAL) as client:
        assert cluster.parallelism() == 3  # one worker of 3 threads
        total, rows = compute(array.sum(), array.sum(axis=1), progress=True)
        each = compute_each([dask.delayed(_square)(i) for i in range(3)], progress=False)
        (where,) = compute(dask.delayed(_worker_address)(), progress=False)
        workers = list(client.scheduler_info()["workers"])
        with dask.config.set(scheduler="sync"):  # an explicit scheduler wins over the client
            assert cluster.parallelism() == 1
    assert dask.config.get("scheduler", None) == before
    assert total == values.sum()
    np.testing.assert_array_equal(rows, values.sum(axis=1))
    assert each == [0, 1, 4]
    assert where in workers  # the tasks ran on the cluster's worker
    assert "100% Completed" in capsys.readouterr().err  # the bar drawn for the cluster


def test_a_task_error_on_a_local_cluster_is_raised_as_it_is():
    tasks = [dask.delayed(_square)(2), dask.delayed(_fail)(5)]
    with connect(n_workers=2, **LOCAL):
        with pytest.raises(ZeroDivisionError, match="task 5 divided by zero"):
            compute(*tasks, progress=False)
        with pytest.raises(ZeroDivisionError, match="task 5 divided by zero"):
            compute_each(tasks, progress=False)  # only dead workers are tolerated
        assert compute(tasks[0], progress=False) == (4,)  # the cluster still works


def test_a_failure_ends_the_wait_at_once_not_when_the_other_tasks_end():
    # Threads for every task, so that the failing one runs while the others are held.
    tasks = [dask.delayed(_held)(i) for i in range(4)] + [dask.delayed(_fail)(7)]
    _HELD_DONE.clear()
    _GATE.clear()
    try:
        with connect(n_workers=len(tasks), **LOCAL):
            with pytest.raises(ZeroDivisionError, match="task 7 divided by zero"):
                compute(*tasks, progress=False)
            assert _HELD_DONE == []  # raised while the others still ran
            _GATE.set()  # before the cluster closes: it waits for its running threads
    finally:
        _GATE.set()


def test_the_wait_counts_each_task_once_to_the_end(capsys):
    # 149 quick tasks and one held until the gate opens 2 s after compute is called: the bar
    # can reach 100 % only then (a task counted twice would get it there early).
    tasks = [dask.delayed(_square)(i) for i in range(149)] + [dask.delayed(_held)(149)]
    _HELD_DONE.clear()
    _GATE.clear()
    opener = threading.Timer(2.0, _GATE.set)
    try:
        with connect(n_workers=2, **LOCAL):
            opener.start()
            results = compute(*tasks, progress=True)
    finally:
        opener.cancel()
        _GATE.set()
    assert list(results) == [i * i for i in range(149)] + [149]
    bar = re.findall(r"\| +(\d+)% Completed \| +([\d.]+)s", capsys.readouterr().err)
    shown = [int(p) for p, _ in bar]
    assert shown and shown[-1] == 100 and 100 not in shown[:-1]
    assert shown == sorted(shown)  # never back
    assert float(bar[-1][1]) >= 1.0  # not before the held task ended (its gate: 2 s)


def test_check_workers_see_on_a_local_cluster_names_the_first_missing_location(tmp_path):
    found = tmp_path / "src"
    found.mkdir()
    gone = str(tmp_path / "gone")
    with connect(n_workers=1, **LOCAL):
        cluster.check_workers_see({"SRC": str(found)})
        cluster.check_workers_see({})
        with pytest.raises(FileNotFoundError) as raised:
            cluster.check_workers_see({"SRC": str(found), "the folder of STORE": gone})
    message = str(raised.value)
    assert message.startswith(f"the Dask workers cannot read the folder of STORE {gone!r} (worker ")
    assert "SRC" not in message


def test_check_workers_see_checks_nothing_without_a_cluster(tmp_path):
    with dask.config.set(scheduler="threads"):
        cluster.check_workers_see({"SRC": str(tmp_path / "gone")})  # this process's view


# -- a lazy block that computes elsewhere starts nothing -------------------------------------
def test_a_lazy_block_starts_nothing_for_an_explicit_scheduler_or_a_local_check(tmp_path):
    with connect(lazy=True, n_workers=1, **LOCAL) as connection:
        assert dask.config.get("scheduler") == connection.scheduler_function
        cluster.check_workers_see({"SRC": str(tmp_path / "gone")})  # local workers see ours
        with dask.config.set(scheduler="sync"):
            assert compute(dask.delayed(_square)(4), progress=False) == (16,)
        assert not connection.started
    assert not connection.started
