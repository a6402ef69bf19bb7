"""The SLURM integration run, started in the background as the test session begins.

The run is bound by the executor's status checks (each job waits for a poll whose interval
grows by 10 s while nothing finishes), not by the CPU: started first, it overlaps the rest
of the suite, and `tests/test_slurm.py` waits for it and checks what it left. It is the
README's cluster command typed in a project folder (the tiny crop, config/config.yaml),
with the `slurm` profile name installed by `sam4em install-profile` into a test-only
XDG_CONFIG_HOME, and each block job made to fail once (SAM4EM_TEST_FAIL_ONCE), so
Snakemake's retry runs in SLURM too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "local-cluster.sh"


@dataclass
class SlurmRun:
    """The background run: its folder, process and outputs, or why it could not start."""

    folder: Path
    failed_once: Path = field(init=False)
    process: subprocess.Popen | None = None
    skipped: str | None = None
    error: str | None = None
    started: float = 0.0

    def __post_init__(self) -> None:
        self.failed_once = self.folder / "failed-once"

    @property
    def project(self) -> Path:
        """The project folder the run works in."""
        return self.folder / "project"

    def start(self) -> None:
        """Start the cluster and, in the background, `snakemake --profile slurm all` in
        :attr:`project` (which holds its data and config/config.yaml already)."""
        if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
            self.skipped = "needs Debian's slurm-wlm (installed by tests/slurm/local-cluster.sh)"
            return
        r = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            self.error = f"the test cluster did not start:\n{r.stdout}{r.stderr}"
            return
        project = self.project
        (project / "workflow").symlink_to(REPO / "workflow")
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.folder / "xdg"),
               "SAM4EM_TEST_FAIL_ONCE": str(self.failed_once), "PATH": path}  # fmt: skip
        site = REPO / "tests" / "slurm" / "profile"
        r = subprocess.run(["sam4em", "install-profile", "--source", str(site), "--name", "slurm"],
                           env=env, cwd=project, capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            self.error = f"sam4em install-profile failed: {r.stderr}"
            return
        self.started = time.time()
        with open(self.folder / "stdout", "w") as out, open(self.folder / "stderr", "w") as err:
            self.process = subprocess.Popen(
                ["snakemake", "--profile", "slurm", "all"], env=env, cwd=project, stdout=out,
                stderr=err, text=True, start_new_session=True,
            )  # fmt: skip

    def wait(self, timeout: float = 3600) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of the finished run."""
        assert self.process is not None
        self.process.wait(timeout=max(1.0, timeout - (time.time() - self.started)))
        return (self.process.returncode, (self.folder / "stdout").read_text(),
                (self.folder / "stderr").read_text())  # fmt: skip

    def stop(self) -> None:
        """Kill a run still going (and its jobs' group), then stop the cluster."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            subprocess.run(["scancel", "--user", os.environ.get("USER", "root")],
                           capture_output=True)  # fmt: skip
        if self.process is not None or self.error:
            subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)
