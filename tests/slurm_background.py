"""The SLURM integration run, started in the background as the test session begins.

The run is bound by the executor's status checks (each job waits for a poll whose interval
grows by 10 s while nothing finishes), not by the CPU: started first, it overlaps the rest
of the suite, and `tests/test_slurm.py` waits for it and checks what it left. It is the
README's cluster command typed in a project folder (the tiny crop, config/config.yaml),
with the `slurm` profile name installed by `sam4em install-profile` into a test-only
XDG_CONFIG_HOME, and each block job made to fail once (SAM4EM_TEST_FAIL_ONCE), so
Snakemake's retry runs in SLURM too.

The run's state lives in its folder, not in the process that started it: under
pytest-xdist the controller starts it and a worker checks it. ``state.json`` says whether
it started (or why not), ``rc`` holds Snakemake's exit status once it has ended."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "local-cluster.sh"


@dataclass
class SlurmRun:
    """The background run in ``folder``: its project, state and outputs. Only the process
    that called :meth:`start` holds :attr:`process` (and stops it)."""

    folder: Path
    process: subprocess.Popen | None = None

    @property
    def project(self) -> Path:
        """The project folder the run works in."""
        return self.folder / "project"

    @property
    def failed_once(self) -> Path:
        """Where each block job notes its injected first failure."""
        return self.folder / "failed-once"

    def _record(self, skipped: str | None = None, error: str | None = None) -> None:
        state = {"skipped": skipped, "error": error, "started": time.time()}
        (self.folder / "state.json").write_text(json.dumps(state))

    def skip(self, reason: str) -> None:
        """Record that the run cannot be made here, and why."""
        self._record(skipped=reason)

    def state(self) -> dict[str, object]:
        """What :meth:`start` recorded: ``skipped`` and ``error`` (None when it started)
        and ``started``; an error when nothing started it."""
        path = self.folder / "state.json"
        assert path.is_file(), f"the SLURM run was never started ({path} is missing)"
        return json.loads(path.read_text())

    def start(self) -> None:
        """Start the cluster and, in the background, `snakemake --profile slurm all` in
        :attr:`project` (which holds its data and config/config.yaml already)."""
        if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
            self.skip("needs Debian's slurm-wlm (installed by tests/slurm/local-cluster.sh)")
            return
        r = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            self._record(error=f"the test cluster did not start:\n{r.stdout}{r.stderr}")
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
            self._record(error=f"sam4em install-profile failed: {r.stderr}")
            return
        # the exit status goes to a file, for whichever process checks the run
        script = 'snakemake --profile slurm all; echo $? > "$0.part" && mv "$0.part" "$0"'
        with open(self.folder / "stdout", "w") as out, open(self.folder / "stderr", "w") as err:
            self.process = subprocess.Popen(
                ["bash", "-c", script, str(self.folder / "rc")], env=env, cwd=project,
                stdout=out, stderr=err, text=True, start_new_session=True,
            )  # fmt: skip
        self._record()

    def wait(self, timeout: float = 3600) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of the finished run, ``timeout`` seconds after it
        started at the latest."""
        rc = self.folder / "rc"
        deadline = float(self.state()["started"]) + timeout  # type: ignore[arg-type]
        while not rc.is_file():
            assert time.time() < deadline, f"the SLURM run did not end within {timeout} s"
            time.sleep(1.0)
        return (int(rc.read_text()), (self.folder / "stdout").read_text(),
                (self.folder / "stderr").read_text())  # fmt: skip

    def stop(self) -> None:
        """Kill a run still going (and its jobs' group), then stop the cluster; only in
        the process that started it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            subprocess.run(["scancel", "--user", os.environ.get("USER", "root")],
                           capture_output=True)  # fmt: skip
        recorded = (self.folder / "state.json").is_file()
        if self.process is not None or (recorded and self.state()["error"]):
            subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)
