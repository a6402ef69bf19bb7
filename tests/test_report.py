"""The HTML report renders in headless Chromium with its tables and every image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import SELF_CONTAINED

pytestmark = pytest.mark.slow  # headless Chromium on a whole pipeline run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]

# appended to a copy of the report: after load, record how many images failed to decode
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', broken);
});
</script>"""


@pytest.fixture(scope="module")
def report(local_run):
    workdir, _, _ = local_run
    return workdir / "results" / "vnc" / "report.html"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test`")
def test_report_renders_with_tables_and_decoded_images(report, tmp_path):
    page = report.read_text()
    assert not re.search(SELF_CONTAINED, page)  # nothing fetched: self-contained
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    images = int(re.search(r'data-images="(\d+)"', dom)[1])
    broken = int(re.search(r'data-broken="(\d+)"', dom)[1])
    assert images >= 6 and broken == 0, (images, broken)
    assert '<table id="metrics">' in dom and '<table id="models">' in dom
    for cls in ("glia", "mito", "synapse"):
        assert f"<th>{cls}</th>" in dom
    summary = json.loads(report.with_name("predictions.json").read_text())
    choice = summary["model_choice"]  # which stage the predictions come from, and why
    assert summary["model_stage"] == choice["model_stage"] in (1, 2)
    assert summary["memory"] is (choice["model_stage"] == 2)
    found = re.search(r'<p id="model-choice">(.*?)</p>', dom, re.S)
    assert found and f"{choice['stage2_val_dice']:.3f}" in found[1]
    assert ("memory on" if choice["model_stage"] == 2 else "memory off") in found[1]
    # the biologist's sections: error maps and uncertainty per class, the object summary,
    # the cross-class measures, what to annotate next
    for table in ("objects", "contacts", "annotate-next"):
        assert f'<table id="{table}">' in dom, table
    assert dom.count("errors and uncertainty") == 3
    rho = re.search(r'id="uncertainty-check">.*?<b>(-?[\d.]+)</b>', dom, re.S)
    assert rho and -1 <= float(rho[1]) <= 1
    assert dom.count(">open</a>") == 10  # the top ten regions, each with its link
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_broken_image_is_detected(tmp_path):
    """The probe itself can fail: a page with an undecodable image is caught."""
    if CHROMIUM is None:
        pytest.skip("chromium is installed by `make test`")
    probe = tmp_path / "bad.html"
    probe.write_text(
        '<html><body><img src="data:image/png;base64,AAAA">' + PROBE + "</body></html>"
    )
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert 'data-broken="1"' in dom
