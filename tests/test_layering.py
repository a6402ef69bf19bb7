"""Imports flow downhill: no module of an earlier stage imports a later stage."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sam4em"
# earliest first; a module may import its own stage and the stages before it
STAGES = [
    ("errors", "progress", "snakemake_profile"),
    ("io",),
    ("config", "crops"),
    ("plotting",),
    ("data",),
    ("tiling",),
    ("blocks",),
    ("model",),
    ("train",),
    ("predict",),
    ("postprocess",),
    ("analysis",),
    ("evaluate",),
    ("report",),
    ("settings",),
    ("cli", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


def _stage(module: str) -> str:
    """The stage of a dotted module below ``sam4em`` (``sam4em.io.source`` -> ``io``)."""
    return module.split(".")[1] if "." in module else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sam4em"):
            found |= (
                {node.module}
                if node.module != "sam4em"
                else {f"sam4em.{a.name}" for a in node.names}
            )
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sam4em.")}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_stage():
    unknown = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES} - set(RANK)
    assert not unknown, f"add {sorted(unknown)} to STAGES"


def _uphill(path: Path, own: str) -> list[str]:
    """The modules of later stages than ``own`` that the file at ``path`` imports."""
    return sorted(m for m in _imports(path) if _stage(m) in RANK and RANK[_stage(m)] > RANK[own])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_downhill(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    later = _uphill(path, own)
    assert not later, f"{own} (stage {RANK[own]}) imports later stages: {later}"


def test_the_check_can_fail(tmp_path):
    """The same check, on an io module that imports the report (from and plain forms, and
    a name imported from the package itself), finds every upward import; one that
    imports only earlier stages passes."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from sam4em.report.html_report import write_report\n"
        "import sam4em.train.trainer\n"
        "from sam4em import cli\n"
        "from sam4em.errors import ConfigError\n"
    )
    assert _uphill(bad, "io") == ["sam4em.cli", "sam4em.report.html_report", "sam4em.train.trainer"]
    good = tmp_path / "good.py"
    good.write_text("from sam4em.io.source import open_source\nfrom sam4em import errors\n")
    assert _uphill(good, "config") == []


@pytest.mark.parametrize(
    "module", ["sam4em.settings", "sam4em.config", "sam4em.data.importer", "sam4em.predict.stitch"]
)
def test_the_config_check_and_the_cpu_verbs_do_not_import_torch(module):
    """What the workflow's parse and the CPU jobs import stays free of torch (and of
    segment-anything, which brings torchvision): seconds of start-up per job."""
    code = (
        f"import sys, {module}; print(sorted({{'torch', 'segment_anything'}} & set(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"{module} imports {r.stdout.strip()}"
