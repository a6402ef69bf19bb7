"""The xdist workers of `make test` share the cores: each worker's torch, and the CLI runs
it starts, use their share (tests/xdist_groups.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.xdist_groups import worker_threads


def test_a_worker_and_its_children_use_their_share_of_the_cores(request) -> None:
    config = request.config
    threads = worker_threads(config)
    if not hasattr(config, "workerinput"):
        assert threads is None  # one process: torch's own default, every core
        pytest.skip("runs in one process: no cores to share")
    workers = int(config.workerinput["workercount"])
    assert threads == max(1, len(os.sched_getaffinity(0)) // workers)
    assert os.environ["OMP_NUM_THREADS"] == str(threads)
    assert torch.get_num_threads() == threads
    code = "import torch; print(torch.get_num_threads())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0 and int(child.stdout) == threads, child.stderr
