"""The pipeline through a real one-node SLURM cluster (tests/slurm/local-cluster.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

pytestmark = pytest.mark.slow  # a real SLURM cluster and a whole pipeline run

GPU_RULES = {"train_stage1", "train_stage2", "predict_block"}


@pytest.fixture(scope="module")
def cluster(repo):
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        pytest.skip("needs Debian's slurm-wlm (installed by tests/slurm/local-cluster.sh)")
    script = repo / "tests" / "slurm" / "local-cluster.sh"
    r = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    yield
    subprocess.run([str(script), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_run(repo, tiny_run, cluster, tmp_path_factory):
    """The README's cluster command, typed as a user types it in the project folder:
    `snakemake --profile slurm all`, with the name installed by `sam4em install-profile`
    into a test-only XDG_CONFIG_HOME, pointing at the test site's profile. The project is
    the tiny crop (the smallest plan with every rule, two blocks and bundled components
    jobs); each block job fails once on purpose, so Snakemake's retry runs in SLURM."""
    local, config = tiny_run
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "workflow").symlink_to(repo / "workflow")
    (workdir / "data").symlink_to(local / "data")
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    xdg = tmp_path_factory.mktemp("xdg")
    failed = tmp_path_factory.mktemp("failed-once")
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg), "SAM4EM_TEST_FAIL_ONCE": str(failed),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    site = repo / "tests" / "slurm" / "profile"
    r = subprocess.run(["sam4em", "install-profile", "--source", str(site), "--name", "slurm"],
                       env=env, cwd=workdir, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["snakemake", "--profile", "slurm", "all"], env=env, cwd=workdir,
                       capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert "Using profile slurm for setting default command line arguments" in r.stderr
    return workdir, r.stdout + r.stderr, failed


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
    assert GPU_RULES <= rules and "stitch" in rules and "report" in rules


def test_bundled_jobs_and_a_retry_ran_in_slurm(slurm_run):
    """The per-block components jobs went as group jobs (bundles of 2 in the test
    profile), and each block job's injected first failure was retried by Snakemake."""
    _, output, failed = slurm_run
    assert re.search(r"group job components_label", output), output[-3000:]
    notes = sorted(p.stem for p in failed.glob("*.failed"))
    assert notes == ["z0y0x0", "z1y0x0"]
    assert output.count("injected test failure") >= 2 or "Trying to restart" in output


def test_slurm_outputs_equal_the_local_run(slurm_run, tiny_run):
    workdir, _, _ = slurm_run
    local, config = tiny_run
    a = zarr.open_group(str(workdir / "results" / "crop" / "pred.zarr"), mode="r")
    b = zarr.open_group(str(local / "results" / "crop" / "pred.zarr"), mode="r")
    for cls in config["classes"]:
        np.testing.assert_array_equal(a[cls]["0"][...], b[cls]["0"][...])
    for name in ("eval/metrics.csv", "objects/mito.csv"):
        assert (workdir / "results" / "crop" / name).read_text() == (
            local / "results" / "crop" / name
        ).read_text()
