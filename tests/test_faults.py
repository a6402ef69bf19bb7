"""Faults in a Snakemake run: a killed run resumes without redoing finished blocks, and a
block job that fails once is retried (on copies of the finished tiny run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr

from tests.conftest import SNAKEMAKE, job_counts, snakemake

pytestmark = pytest.mark.slow  # kills and resumes real Snakemake runs


def _fresh_inference(tiny_run, tmp_path):
    """A copy of the tiny run with its trained models, everything after training removed;
    (folder, config file, config)."""
    workdir, config = tiny_run
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    res = copy / "results" / "crop"
    for name in ("blocks", "pred.zarr", "instances.zarr", "objects", "eval", "figures"):
        shutil.rmtree(res / name, ignore_errors=True)
    for name in ("predictions.json", "report.html", "layers.json"):
        (res / name).unlink(missing_ok=True)
    return copy, copy / "config.yaml", config


def _pred(workdir, classes):
    root = zarr.open_group(str(workdir / "results" / "crop" / "pred.zarr"), mode="r")
    return np.stack([root[c]["0"][...] for c in classes])


def test_killed_run_resumes_without_redoing_finished_blocks(repo, tiny_run, tmp_path):
    copy, cfg, config = _fresh_inference(tiny_run, tmp_path)
    cmd = [*SNAKEMAKE, "--snakefile", str(repo / "workflow" / "Snakefile"), "--directory",
           str(copy), "--profile", str(repo / "profiles" / "local"), "--cores", "2",
           "results/crop/predictions.json", "--configfile", str(cfg)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    blocks = copy / "results" / "crop" / "blocks"
    planned = len(json.loads((copy / "results" / "crop" / "blocks.json").read_text())["blocks"])
    assert planned >= 2
    deadline = time.monotonic() + 900
    while not list(blocks.glob("*.done")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its running job
    proc.wait()
    done = len(list(blocks.glob("*.done")))
    assert 1 <= done < planned  # one GPU job at a time (gpu=1): the next one was running
    # as after any crash: release Snakemake's lock on the directory, then run again
    assert snakemake(repo, copy, "--unlock", config=cfg).returncode == 0
    r = snakemake(repo, copy, "results/crop/predictions.json", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr).get("predict_block") == planned - done
    np.testing.assert_array_equal(
        _pred(copy, config["classes"]), _pred(tiny_run[0], config["classes"])
    )


def test_block_failing_once_is_retried(repo, tiny_run, tmp_path):
    copy, cfg, config = _fresh_inference(tiny_run, tmp_path)
    notes = tmp_path / "failures"
    env = {**os.environ, "SAM4EM_TEST_FAIL_ONCE": str(notes)}
    target = "results/crop/blocks/z0y0x0.done"
    r = snakemake(repo, copy, "--retries", "1", target, config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (notes / "z0y0x0.failed").is_file()  # the first attempt did fail
    assert (copy / "results" / "crop" / "blocks" / "z0y0x0.done").is_file()
