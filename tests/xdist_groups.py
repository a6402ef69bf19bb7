"""How a run on pytest-xdist workers (``--dist loadgroup``: `make test` and `make
test-fast`) shares the suite, and the machine's cores, between them.

A module whose tests share an expensive fixture runs on one worker, so the fixture is made
once: every module that uses a shared pipeline run (``local_run``, ``tiny_run``) goes with
that run, and a module with a module-scoped fixture stays whole. Every other test goes to
whichever worker is free.

xdist's own ``loadgroup`` reads ``xdist_group`` marks by appending ``@group`` to node ids,
which pytest 9.2's structured node ids no longer allow (pytest-xdist issue 1386: the marks
are silently ignored). So each worker writes the groups it computed to a file in the
session's temporary folder, and the controller's scheduler (:class:`GroupScheduling`)
reads them from there.

Under xdist the workers also put the long work first (the shared runs, the grouped
modules, the slow single tests), so that no long test starts last, and the ``tiny_run``
modules after the other long ones: ``test_slurm.py`` waits there for the background
SLURM run, which has had the time to end by then.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

#: session fixtures worth making once per test run: they and the modules using them stay
#: on one worker (the rerun tests change ``tiny_run`` for a moment and put it back)
SHARED_RUNS = ("local_run", "tiny_run")
#: the shared run whose modules start after the other long work
LATE_RUN = "tiny_run"
GROUPS_FILE = "xdist-groups.json"


def module_group(items: list[pytest.Item]) -> str | None:
    """The group of one module's ``items``: the shared run it uses, else the module when
    it has a module-scoped fixture, else None (each test on its own)."""
    names = set().union(*(item.fixturenames for item in items))
    for shared in SHARED_RUNS:
        if shared in names:
            return shared
    for item in items:
        for defs in item._fixtureinfo.name2fixturedefs.values():  # noqa: SLF001
            if defs and defs[-1].scope == "module":
                return item.path.stem
    return None


def groups_of(items: list[pytest.Item]) -> dict[pytest.Item, str]:
    """{item: group} for the items of every module that has a :func:`module_group`."""
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    groups = {}
    for module_items in modules.values():
        group = module_group(module_items)
        if group is not None:
            groups |= dict.fromkeys(module_items, group)
    return groups


def run_order(items: list[pytest.Item], groups: dict[pytest.Item, str]) -> list[pytest.Item]:
    """``items`` in the order a worker hands them to the scheduler: the shared runs other
    than :data:`LATE_RUN`, then the other groups and the slow single tests, then the
    :data:`LATE_RUN` modules, then the rest (each part in collection order)."""

    def rank(item: pytest.Item) -> int:
        group = groups.get(item)
        if group == LATE_RUN:
            return 2
        if group in SHARED_RUNS:
            return 0
        return 1 if group is not None or item.get_closest_marker("slow") else 3

    return sorted(items, key=rank)


#: what the BLAS and OpenMP libraries read for their thread count (snakemake sets the same
#: for each job it runs, from the rule's threads)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_threads(config: pytest.Config) -> int | None:
    """Threads for one xdist worker's torch work: the machine's cores shared out among
    the workers (one each on two cores with two workers), None outside a worker. Two
    workers whose torch ran on every core each left the suite slower than one process."""
    if not hasattr(config, "workerinput"):
        return None
    workers = int(config.workerinput["workercount"])
    return max(1, len(os.sched_getaffinity(0)) // workers)


def share_cores(config: pytest.Config) -> None:
    """On an xdist worker, set this process's torch threads and the thread variables its
    children inherit to :func:`worker_threads` (the CLI runs it starts; Snakemake sets
    its jobs' own from each rule's threads)."""
    threads = worker_threads(config)
    if threads is None:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # read at import otherwise
        sys.modules["torch"].set_num_threads(threads)


def session_folder(config: pytest.Config) -> Path:
    """The session's base temporary folder, the same in every process of an xdist run (a
    worker's own base folder is a folder inside it)."""
    base = config._tmp_path_factory.getbasetemp()  # noqa: SLF001
    return base.parent if hasattr(config, "workerinput") else base


def groups_file(config: pytest.Config) -> Path:
    """Where the workers leave their groups for the controller."""
    return session_folder(config) / GROUPS_FILE


def write_groups(config: pytest.Config, groups: dict[str, str]) -> None:
    """Leave the {node id: group} of this worker's collection for the controller (every
    worker writes the same; each write replaces the file whole)."""
    path = groups_file(config)
    part = path.with_name(f"{path.name}.{os.getpid()}")
    part.write_text(json.dumps(groups))
    part.replace(path)


def make_scheduler(config: pytest.Config, log):  # noqa: ANN201 - xdist's scheduler
    """The controller's scheduler for ``--dist loadgroup``: xdist's scope scheduling with
    the scopes the workers wrote, in their collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """A test's scope is its group, or the test itself."""

        def __init__(self, config: pytest.Config, log=None) -> None:
            super().__init__(config, log)
            self._groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # read once the workers have collected
                path = groups_file(self.config)
                self._groups = json.loads(path.read_text()) if path.is_file() else {}
            return self._groups.get(nodeid, nodeid)

    config.option.loadscopereorder = False  # the workers' order: long work first
    return GroupScheduling(config, log)
