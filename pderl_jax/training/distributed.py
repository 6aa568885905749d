"""One program over several processes (one per host) with `jax.distributed`.

Every process runs the same command; process 0 hosts the coordinator. After `start`, `jax.devices()`
spans all processes, the sweep's run axis or a run's population axis is sharded over them (see
`sharding.py`), each process computes its own share, and the host-side values (metrics, counters)
are gathered to every process so that all of them take the same decisions. Only process 0 writes
files and shows progress. On CPU the collectives go through gloo.

Faults: a process that never joins stops the others after the join timeout; one that dies makes
the others' next collective fail, and they exit naming it (`stop_on_lost_process`) instead of
waiting in that collective. Mismatched settings between processes are refused (`check_agreement`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass

import jax
import numpy as np

from pderl_jax.config import ConfigError

LOST_PROCESS_EXIT = 4  # the exit status of a process whose partner died
_timeout_s = 60.0  # the group's join and heartbeat timeout, set by `start`
# Words in the errors of a collective or RPC whose partner has gone.
_LOST_SIGNS = ("gloo", "connection closed", "connection reset", "heartbeat", "unavailable", "socket closed",
               "broken pipe", "deadline exceeded")


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands among the others (from --coordinator/--num-processes/--process-id)."""

    coordinator: str
    num_processes: int
    process_id: int
    timeout_s: int = 60  # for the others to join, and for a silent process to count as lost

    def validate(self) -> None:
        host, sep, port = self.coordinator.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator {self.coordinator!r} must be HOST:PORT (e.g. 127.0.0.1:12345, or the "
                              "first node's hostname and a free port)")
        if self.num_processes < 1:
            raise ConfigError(f"--num-processes must be at least 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise ConfigError(f"--process-id {self.process_id} is out of range: with --num-processes "
                              f"{self.num_processes} each process takes its own id in 0..{self.num_processes - 1}")
        if self.timeout_s < 1:
            raise ConfigError(f"--join-timeout must be at least 1 second, got {self.timeout_s}")


def group_from_flags(coordinator: str | None, num_processes: int | None, process_id: int | None,
                     timeout_s: int = 60) -> ProcessGroup | None:
    """The group the flags name, or None for a single process; all three flags or none."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if all(v is None for v in given.values()):
        return None
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise ConfigError(f"a multi-process run needs --coordinator, --num-processes and --process-id together; "
                          f"add {', '.join(missing)}")
    group = ProcessGroup(coordinator, num_processes, process_id, timeout_s)
    group.validate()
    return group


def cluster_detected() -> bool:
    """Whether the environment describes several processes that `jax.distributed.initialize()` can read
    by itself: JAX's own variables, or a SLURM step of several tasks (`srun`; a batch script's own
    step, one process, is not one)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "1")
    return "SLURM_PROCID" in os.environ and tasks.isdigit() and int(tasks) > 1


def start(group: ProcessGroup | None, timeout_s: int = 60) -> None:
    """Join the other processes before anything touches a device (`group` None: as the environment says).

    A join that does not complete within the timeout stops this process with a message (JAX would
    otherwise abort from its own thread without one).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A lost process then fails the others' collectives (handled by `stop_on_lost_process`) instead
    # of aborting them from JAX's error-polling thread.
    jax.config.update("jax_enable_recoverability", True)
    global _timeout_s
    if group is None:
        where, total, me, timeout_s = "the cluster's coordinator", None, None, timeout_s
        arguments = {}
    else:
        where, total, me, timeout_s = group.coordinator, group.num_processes, group.process_id, group.timeout_s
        arguments = {"coordinator_address": group.coordinator, "num_processes": total, "process_id": me}
    _timeout_s = timeout_s

    def never_joined():
        others = "the other process" if total == 2 else "one of the other processes"
        named = f" ({1 - me})" if total == 2 else ""
        this = "this process" if group is None else f"process {me} of {total}"
        sys.stderr.write(f"\npderl-jax: error: {this} waited {timeout_s} s at {where} but {others}{named} never "
                         f"joined. Start every process with the same --coordinator and --num-processes, each with "
                         f"its own --process-id, and check that {where} is reachable from each host (or raise "
                         f"--join-timeout)\n")
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(max(timeout_s - 1, 0.5), never_joined)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**arguments, initialization_timeout=timeout_s + 5,
                                   heartbeat_timeout_seconds=timeout_s, shutdown_timeout_seconds=timeout_s)
    finally:
        watchdog.cancel()


def finish(timeout_s: float = 60) -> None:
    """Leave the group together: the others disconnect first, then process 0, whose coordinator they
    must reach to disconnect (leaving earlier would abort them). Bounded by `timeout_s`."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed as state

    client, me = state.global_state.client, jax.process_index()
    with contextlib.suppress(Exception):  # a process already gone: leave anyway
        client.wait_at_barrier("pderl-jax: finished", int(timeout_s * 1000))
        if me == 0:
            deadline = time.monotonic() + timeout_s
            while len(client.get_live_nodes(list(range(jax.process_count())))) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
    jax.distributed.shutdown()


def is_writer() -> bool:
    """Whether this process writes files and reports (process 0)."""
    return jax.process_index() == 0


def to_host(tree):
    """Every array as a NumPy array on this host, gathered from all processes where it is spread over
    them (host values stay as they are)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        return np.asarray(x) if x.is_fully_addressable else multihost_utils.process_allgather(x, tiled=True)
    return jax.tree.map(one, tree)


def each_process(value: np.ndarray) -> np.ndarray:
    """This host's `value` from every process, stacked: [processes, ...]."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(value)))


def barrier(name: str) -> None:
    """Wait until every process reaches this point (e.g. process 0 has prepared a folder)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process (e.g. Ctrl-C reached only some of them)."""
    if jax.process_count() == 1:
        return flag
    return bool(each_process(np.int32(flag)).any())


def check_agreement(record: dict, what: str = "settings") -> None:
    """Refuse to go on unless every process was given the same `record` (settings, budget, out folder)."""
    if jax.process_count() == 1:
        return
    text = json.dumps(record, sort_keys=True, default=str)
    digest = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=16).digest(), np.uint32)
    digests = each_process(digest).reshape(jax.process_count(), -1)
    differing = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
    if differing:
        raise ConfigError(f"the processes were given different {what}: process(es) {differing} differ from process "
                          f"0. Start every process with the same command, apart from --process-id")


def lost_processes(wait_s: float) -> list[int]:
    """The processes the coordinator no longer hears from (all others if it cannot be asked within `wait_s`)."""
    from jax._src import distributed as state  # the running client: its view of who is alive

    me, everyone = jax.process_index(), list(range(jax.process_count()))
    result: list = []

    def ask():
        try:
            result.append(sorted(state.global_state.client.get_live_nodes(everyone)))
        except Exception:  # noqa: BLE001 - the coordinator itself is gone
            result.append([me] if me != 0 else None)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(wait_s)
    live = result[0] if result and result[0] is not None else [me]
    return [i for i in everyone if i not in live]


@contextlib.contextmanager
def stop_on_lost_process(resume_hint: str = ""):
    """Exit with a message naming the lost process when a collective fails because one has gone.

    Without this, JAX would wait in the failed collective's shutdown for its own timeout.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unless a partner process has gone
        text = str(error).lower()
        if jax.process_count() == 1 or not any(sign in text for sign in _LOST_SIGNS):
            raise
        me, total = jax.process_index(), jax.process_count()
        started = time.perf_counter()
        missing = lost_processes(_timeout_s + 5)  # the coordinator counts a process lost after the timeout
        named = (f"process {missing[0]}" if len(missing) == 1 else f"processes {missing}") if missing else \
            "another process"
        first_line = str(error).strip().splitlines()[0][:200]
        sys.stderr.write(f"\npderl-jax: error: process {me} of {total} lost contact with {named} (it stopped or was "
                         f"killed; found after {time.perf_counter() - started:.0f} s: {first_line}). Stopping. "
                         f"{resume_hint}\n")
        sys.stderr.flush()
        os._exit(LOST_PROCESS_EXIT)


__all__ = ["ProcessGroup", "group_from_flags", "cluster_detected", "start", "finish", "is_writer", "to_host", "barrier",
           "any_process",
           "check_agreement", "stop_on_lost_process", "LOST_PROCESS_EXIT"]
