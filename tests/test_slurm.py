"""The pipeline through a real one-node SLURM cluster (tests/slurm/local-cluster.sh)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from tests.conftest import slurm_folder
from tests.slurm_background import SlurmRun

pytestmark = pytest.mark.slow  # a real SLURM cluster and a whole pipeline run

GPU_RULES = {"train_stage1", "train_stage2", "predict_block"}


@pytest.fixture(scope="module")
def slurm_run(request):
    """(project folder, output, folder of the injected failures) of the README's cluster
    command, run in the background since the session began (tests/slurm_background.py):
    the tiny crop, the smallest plan with every rule, two blocks and bundled components
    jobs; each block job fails once on purpose, so Snakemake's retry runs in SLURM."""
    run = SlurmRun(slurm_folder(request.config))
    state = run.state()
    if state["skipped"]:
        pytest.skip(str(state["skipped"]))
    assert state["error"] is None, state["error"]
    code, stdout, stderr = run.wait()
    assert code == 0, (stdout + stderr)[-5000:]
    assert "Using profile slurm for setting default command line arguments" in stderr
    return run.project, stdout + stderr, run.failed_once


def test_every_job_ran_in_slurm_in_its_partition(slurm_run):
    workdir, _, _ = slurm_run
    logs = sorted((workdir / "results" / "logs" / "crop").glob("*.log"))
    assert len(logs) >= 14
    rules = set()
    for log in logs:
        rule = re.sub(r"_(z\d+y\d+x\d+|train|val|glia|mito|synapse)$", "", log.stem)
        rules.add(rule)
        found = re.search(r"sam4em: SLURM job (\d+), partition (\w+)", log.read_text())
        assert found, f"{log.name} did not run as a SLURM job"
        assert found[2] == ("gpu" if rule in GPU_RULES else "cpu"), (log.name, found[2])
    assert rules >= GPU_RULES and "stitch" in rules and "report" in rules


def test_bundled_jobs_and_a_retry_ran_in_slurm(slurm_run):
    """The per-block components jobs went as group jobs (bundles of 2 in the test
    profile), and each block job's injected first failure was retried by Snakemake."""
    _, output, failed = slurm_run
    assert len(re.findall(r"Group job components_label", output)) == 3  # 6 jobs, by 2
    notes = sorted(p.stem for p in failed.glob("*.failed"))
    assert notes == ["z0y0x0", "z1y0x0"]
    assert len(re.findall(r"Trying to restart job", output)) == 2


def test_slurm_outputs_equal_the_local_run(slurm_run, tiny_run):
    workdir, _, _ = slurm_run
    local, config = tiny_run
    a = zarr.open_group(str(workdir / "results" / "crop" / "pred.zarr"), mode="r")
    b = zarr.open_group(str(local / "results" / "crop" / "pred.zarr"), mode="r")
    for cls in config["classes"]:
        np.testing.assert_array_equal(a[cls]["0"][...], b[cls]["0"][...])
    for name in (
        "eval/metrics.csv",
        "objects/mito.csv",
        "analysis/synapse.csv",
        "annotate_next.csv",
    ):
        assert (workdir / "results" / "crop" / name).read_text() == (
            local / "results" / "crop" / name
        ).read_text()
