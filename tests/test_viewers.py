"""Outputs as viewers read them: real OME-Zarr readers (ome-zarr, ome-zarr-models) on a
real import, components run and layers step; the neuroglancer link and the data server."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from tests.conftest import assert_user_error, run_cli

SHAPE = (4, 600, 520)  # y above one screen (512): two levels
VOXEL = [50, 5, 4]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """results/d of a small labelled dataset: imported, probabilities written where the
    annotation is (a stand-in for a model), components and layers run by the CLI."""
    from sam4em.predict.pred_store import ensure_pred_store, mark_complete, store_identity

    tmp_path = tmp_path_factory.mktemp("viewers")
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    truth = np.zeros(SHAPE, np.uint8)
    for cy, cx, r in ((100, 100, 30), (300, 400, 40), (500, 200, 25)):
        truth[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    raw = (np.random.default_rng(0).integers(0, 60, SHAPE) + 150 * truth).astype(np.uint8)
    tifffile.imwrite(tmp_path / "raw.tif", raw, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", truth, photometric="minisblack")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "classes": ["mito", "glia"],
        "datasets": {"d": {"raw": str(tmp_path / "raw.tif"), "voxel_size": VOXEL,
                           "labels": {"source": str(tmp_path / "lab.tif"),
                                      "values": {"mito": 1}}}},
        "storage": {"chunks": [2, 128, 128]},
        "components": {"threshold": {"mito": 0.5, "glia": 0.5}, "min_volume_nm3": 0,
                       "open_nm": 0, "close_nm": 0},
    }))  # fmt: skip
    res = tmp_path / "results" / "d"
    vol, pred, inst = res / "volume.zarr", res / "pred.zarr", res / "instances.zarr"
    assert (
        run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(vol)).returncode == 0
    )
    store = ensure_pred_store(pred, store_identity(SHAPE, [2, 128, 128], ["mito", "glia"]), VOXEL)
    store["mito/0"][...] = truth * 230
    mark_complete(store, {"model": "m", "volume": "v", "blocks": 1})
    for cls in ("mito", "glia"):
        objects = str(res / "objects" / f"{cls}.csv")
        r = run_cli("components", "--config", str(cfg), "--pred", str(pred), "--class", cls,
                    "--out", str(inst), "--objects", objects)  # fmt: skip
        assert r.returncode == 0, r.stderr
    r = run_cli("layers", "--volume", str(vol), "--pred", str(pred), "--instances", str(inst),
                "--out", str(res / "layers.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return res, truth


@pytest.fixture
def results(made, tmp_path):
    """A copy of :func:`made` of the test's own (tests move it or write to it)."""
    res, truth = made
    copy = tmp_path / "results" / "d"
    shutil.copytree(res, copy)
    return copy, truth


def _nodes(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return {str(node.zarr.path).rstrip("/").split("volume.zarr")[-1]: node
            for node in Reader(parse_url(str(path)))()}  # fmt: skip


def test_ome_zarr_reader_finds_image_levels_and_every_label_image(results):
    res, truth = results
    nodes = _nodes(res / "volume.zarr")
    assert set(nodes) == {"", "/labels", "/labels/mito", "/labels/mito_objects",
                          "/labels/glia_objects"}  # fmt: skip
    image = nodes[""]
    assert [d.shape for d in image.data] == [SHAPE, (4, 300, 260)]
    assert [a["unit"] for a in image.metadata["axes"]] == ["nanometer"] * 3
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[50.0, 5.0, 4.0], [50.0, 10.0, 8.0]]
    for name in ("mito", "mito_objects", "glia_objects"):
        node = nodes[f"/labels/{name}"]
        assert "Label" in {type(s).__name__ for s in node.specs}, name
        assert [d.shape for d in node.data] == [SHAPE, (4, 300, 260)], name
    np.testing.assert_array_equal(np.asarray(nodes["/labels/mito"].data[0]), truth)
    # the objects layer is the components output itself, read through the links
    objects = np.asarray(nodes["/labels/mito_objects"].data[0])
    stored = np.asarray(zarr.open_group(str(res / "instances.zarr"))["mito/0"])
    np.testing.assert_array_equal(objects, stored)
    assert len(np.unique(objects)) == 4  # background and three discs
    assert nodes["/labels/mito"].metadata["color"][1][:3] == pytest.approx(
        [0.1, 0.6, 1.0], abs=0.01
    )
    # the levels of label images are modes: no id appears that level 0 lacks
    assert set(np.unique(np.asarray(nodes["/labels/mito_objects"].data[1]))) <= set(
        np.unique(objects)
    )


def test_stores_validate_against_ome_ngff_0_5(results):
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    res, _ = results
    image = Image.from_zarr(zarr.open_group(str(res / "volume.zarr"), mode="r"))
    assert image.labels is not None
    assert image.labels.ome_attributes.labels == ["mito", "mito_objects", "glia_objects"]
    for name in ("mito", "mito_objects"):
        label = ImageLabel.from_zarr(zarr.open_group(str(res / "volume.zarr" / "labels" / name)))
        assert label.ome_attributes.image_label.source.image == "../../"
    # per-class images (pred.zarr gets its levels from stitch, not run here)
    for store, levels in (("pred.zarr", 1), ("pred.zarr/uncertainty", 1), ("instances.zarr", 2)):
        group = zarr.open_group(str(res / store / "mito"), mode="r")
        assert len(Image.from_zarr(group).ome_attributes.multiscales[0].datasets) == levels
    # the instance root now names its classes (one job per class could not)
    inst = zarr.open_group(str(res / "instances.zarr"), mode="r")
    assert inst.attrs["sam4em"]["classes"] == ["mito", "glia"]


def test_results_folder_moves_as_a_whole(results, tmp_path):
    res, truth = results
    moved = tmp_path / "elsewhere" / "d"
    shutil.move(str(res), str(moved))
    nodes = _nodes(moved / "volume.zarr")
    objects = np.asarray(nodes["/labels/mito_objects"].data[0])
    assert ((objects > 0) == truth.astype(bool)).all()


def test_layers_step_again_replaces_its_links(results):
    res, _ = results
    stores = [str(res / s) for s in ("volume.zarr", "pred.zarr", "instances.zarr")]
    args = ["--volume", stores[0], "--pred", stores[1], "--instances", stores[2]]
    assert run_cli("layers", *args, "--out", str(res / "layers.json")).returncode == 0
    labels = zarr.open_group(str(res / "volume.zarr" / "labels"), mode="r")
    assert labels.attrs["ome"]["labels"] == ["mito", "mito_objects", "glia_objects"]


def test_view_prints_napari_command_and_neuroglancer_link(results):
    res, _ = results
    r = run_cli("view", str(res))
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line[:14])
    napari = lines["napari"].split()
    assert napari[:3] == ["napari", "--plugin", "napari-ome-zarr"]
    images = ("volume.zarr", "pred.zarr/mito", "pred.zarr/glia",
              "pred.zarr/uncertainty/mito", "pred.zarr/uncertainty/glia")  # fmt: skip
    assert napari[3:] == [str(res / p) for p in images]
    url = lines["neuroglancer"].strip()
    state = json.loads(urllib.parse.unquote(url.split("#!", 1)[1]))
    kinds = {layer["name"]: layer["type"] for layer in state["layers"]}
    assert kinds == {
        "raw": "image",
        "mito probability": "image",
        "glia probability": "image",
        "mito uncertainty": "image",
        "glia uncertainty": "image",
        "mito truth": "segmentation",
        "mito objects": "segmentation",
        "glia objects": "segmentation",
    }
    for layer in state["layers"]:  # every source is a zarr v3 group of the results folder
        rel = layer["source"].split("127.0.0.1:8000/", 1)[1]
        assert layer["source"].startswith("zarr3://http://")
        assert (res / rel / "zarr.json").is_file(), rel
    assert_user_error(run_cli("view", str(res.parent)), "no layers.json")


def test_served_folder_is_readable_from_another_origin(results):
    """What neuroglancer fetches: a level's zarr.json and a chunk through the links,
    with the CORS header a browser needs."""
    from sam4em.report.viewer import serve

    res, _ = results
    server = serve(res, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(base + "volume.zarr/labels/mito_objects/0/zarr.json") as f:
            assert f.headers["Access-Control-Allow-Origin"] == "*"
            assert json.loads(f.read())["data_type"] == "uint32"
        with urllib.request.urlopen(base + "volume.zarr/labels/mito_objects/0/c/0/0/0") as f:
            assert len(f.read()) > 0
    finally:
        server.shutdown()
        server.server_close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _neuroglancer_screenshot(res, layer_names):
    """What neuroglancer draws of ``layer_names`` from the `sam4em view` link's state:
    the neuroglancer package's own client in headless Chromium (software WebGL), the data
    read over HTTP from the served results folder; (H, W, 4) uint8."""
    import neuroglancer

    from sam4em.report.viewer import neuroglancer_url, read_layers, serve

    server = serve(res, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record = read_layers(res)
    record["layers"] = [layer for layer in record["layers"] if layer["name"] in layer_names]
    data = f"http://127.0.0.1:{server.server_address[1]}"
    link = neuroglancer_url(record, data, client="")
    state = json.loads(urllib.parse.unquote(link.split("#!", 1)[1]))
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(state))
    flags = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--window-size=800,600", "--remote-debugging-port=0"]  # fmt: skip
    browser = subprocess.Popen([CHROMIUM, *flags, viewer.get_viewer_url()],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shots = []
    worker = threading.Thread(target=lambda: shots.append(viewer.screenshot(size=[800, 600])))
    worker.daemon = True
    try:
        worker.start()
        worker.join(timeout=180)
        assert shots, "neuroglancer sent no screenshot within 180 s"
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
        server.server_close()
    return shots[0].screenshot.image_pixels


def _coloured(pixels):
    """Pixels that are neither grey (EM) nor the viewer's own lines: (N, 3) RGB."""
    rgb = pixels[..., :3].astype(int)
    saturated = rgb.max(axis=-1) - rgb.min(axis=-1) > 60
    return rgb[saturated]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test`")
def test_neuroglancer_draws_the_objects_over_the_em(results):
    res, _ = results
    em = _neuroglancer_screenshot(res, {"raw"})
    both = _neuroglancer_screenshot(res, {"raw", "mito objects"})
    grey = np.abs(em[..., 0].astype(int) - em[..., 1]) < 8
    assert grey.mean() > 0.9  # the EM (and the background around it) was drawn
    before, after = _coloured(em), _coloured(both)
    # three discs of about 60 x 75 screen pixels each, in colours of their own
    assert len(after) - len(before) > 5000, (len(before), len(after))
    colours, counts = np.unique(after // 32, axis=0, return_counts=True)
    assert (counts > 500).sum() >= 3, dict(zip(map(tuple, colours), counts, strict=True))
