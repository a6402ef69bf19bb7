"""Looking at a dataset's results in napari and neuroglancer.

:func:`write_layers` (the workflow's ``layers`` step, after every class's components)
makes ``volume.zarr`` the one OME-Zarr image a viewer opens: its ``labels`` group lists
the annotation of each labelled class and, as ``{class}_objects``, each class's predicted
objects: a label image whose level arrays are relative symbolic links to those of
``instances.zarr/{class}``, so nothing is copied and the results folder can move as a
whole. It also lists the classes in ``instances.zarr``'s
root (one job per class writes them, so no class job can) and writes ``layers.json``:
every layer of the dataset (image or segmentation, path relative to the results folder).

:func:`neuroglancer_url` turns those layers into a neuroglancer link for data served by
:func:`serve` (plain HTTP with CORS, from the results folder) and :func:`napari_command`
into the command that opens the same layers in napari.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zarr

from sam4em.errors import InputDataError
from sam4em.io.atomic import write_json_atomic
from sam4em.io.zarr_store import INSTANCES, LEVEL0, PREDICTION, VOLUME, write_label_metadata
from sam4em.predict.pred_store import UNCERTAINTY
from sam4em.report import SERVE_HOST

#: the file :func:`write_layers` writes into a dataset's results folder
LAYERS = "layers.json"
#: the public neuroglancer client the links open (any other deployment works the same)
NEUROGLANCER = "https://neuroglancer-demo.appspot.com/"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link_label_image(labels: zarr.Group, name: str, objects: zarr.Group, at: Path) -> None:
    """Make ``labels[name]`` (folder ``at``) a label image whose levels are relative
    symbolic links to the level arrays of the instance group ``objects``. The group
    itself is real, so readers that resolve links (ome-zarr) still see it under the
    image, with its own name."""
    _remove(at)
    group = labels.create_group(name)
    group.attrs["ome"] = dict(objects.attrs["ome"])
    target = Path(str(objects.store.root)) / objects.path  # type: ignore[attr-defined]
    for dataset in objects.attrs["ome"]["multiscales"][0]["datasets"]:
        level = target / dataset["path"]
        os.symlink(os.path.relpath(level, at), at / dataset["path"], target_is_directory=True)
    write_label_metadata(labels, name, None)


def _list_classes(instances: Path, classes: list[str]) -> None:
    """Record ``classes`` in the instance store's root attributes. The root's zarr.json
    is replaced by a rename rather than rewritten through zarr (which writes in place),
    because the evaluation may be opening the store at the same moment."""
    path = instances / "zarr.json"
    meta = json.loads(path.read_text())
    meta["attributes"]["sam4em"] = {**meta["attributes"]["sam4em"], "classes": classes}
    write_json_atomic(path, meta)


def write_layers(
    volume: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    instances: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> dict[str, Any]:
    """List each class's objects as a label image of ``volume`` (see the module
    docstring) and write the layers record ``out``; returns it."""
    volume, pred, instances = Path(volume), Path(pred), Path(instances)
    root = VOLUME.open(volume, mode="r+")
    meta = root.attrs["sam4em"]
    classes: list[str] = list(meta["classes"])
    inst_root = INSTANCES.open(instances)
    found = [c for c in classes if c in inst_root and LEVEL0 in inst_root[c]]
    if not found:
        raise InputDataError(f"{instances}: holds no class yet; run the components step first")
    _list_classes(instances, found)
    labels = root.require_group("labels")
    for cls in found:
        at = volume / "labels" / f"{cls}_objects"
        _link_label_image(labels, f"{cls}_objects", inst_root[cls], at)
    pred_classes = PREDICTION.open(pred).attrs["sam4em"]["classes"]
    base = volume.parent
    layers = [{"name": "raw", "kind": "image", "path": _rel(volume, base)}]
    layers += [
        {"name": f"{c} probability", "kind": "image", "path": _rel(pred / c, base)}
        for c in pred_classes
    ]
    layers += [
        {"name": f"{c} uncertainty", "kind": "image",
         "path": _rel(pred / UNCERTAINTY / c, base)}
        for c in pred_classes
    ]  # fmt: skip
    layers += [
        {"name": f"{c} truth", "kind": "segmentation", "path": _rel(volume / "labels" / c, base)}
        for c in meta.get("labelled_classes", [])
    ]
    layers += [
        {"name": f"{c} objects", "kind": "segmentation", "path": _rel(instances / c, base)}
        for c in found
    ]
    record = {
        "dataset": meta.get("dataset", ""),
        "volume": _rel(volume, base),
        "voxel_size_nm": [float(v) for v in meta["voxel_size_nm"]],
        "layers": layers,
    }
    write_json_atomic(out, record)
    return record


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def read_layers(results: str | os.PathLike[str]) -> dict[str, Any]:
    """The layers record of a dataset's results folder; an InputDataError when absent."""
    path = Path(results) / LAYERS
    if not path.is_file():
        raise InputDataError(
            f"{results}: no {LAYERS}; run the workflow for this dataset first "
            f"(snakemake ... {path})"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputDataError(f"{path}: not a layers file ({exc})") from None


def neuroglancer_url(
    record: dict[str, Any],
    data_url: str,
    client: str = NEUROGLANCER,
    position: tuple[float, float, float] | None = None,
) -> str:
    """A link to the neuroglancer ``client`` (its page's URL) showing every layer of
    ``record``, read from ``data_url`` (the results folder as served, e.g. by
    :func:`serve`); probabilities start hidden. ``position``: the (z, y, x) voxel the
    view opens at (default: the volume's centre)."""
    layers = []
    for layer in record["layers"]:
        image = layer["kind"] == "image"
        entry = {
            "type": "image" if image else "segmentation",
            "source": f"zarr3://{data_url.rstrip('/')}/{layer['path']}/",
            "name": layer["name"],
        }
        if image and layer["path"] != record["volume"]:
            entry["visible"] = False
        layers.append(entry)
    vz, vy, vx = (v * 1e-9 for v in record["voxel_size_nm"])
    # x and y first: neuroglancer's xy panel shows the first two dimensions (a section)
    dimensions = {"x": [vx, "m"], "y": [vy, "m"], "z": [vz, "m"]}
    state: dict[str, Any] = {"dimensions": dimensions, "layers": layers, "layout": "xy"}
    if position is not None:
        z, y, x = position
        state["position"] = [float(x), float(y), float(z)]
    return f"{client}#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))


def napari_command(record: dict[str, Any], results: str | os.PathLike[str]) -> str:
    """The shell command that opens every layer in napari through the napari-ome-zarr
    reader: the volume (raw, with truth and objects as label layers) and each class's
    probabilities and uncertainty."""
    paths = [record["volume"]] + [
        layer["path"]
        for layer in record["layers"]
        if layer["kind"] == "image" and layer["path"] != record["volume"]
    ]
    return "napari --plugin napari-ome-zarr " + " ".join(
        shlex.quote(str(Path(results) / p)) for p in paths
    )


class _CorsHandler(SimpleHTTPRequestHandler):
    """Static files with the header that lets a neuroglancer page on another origin
    read them; no request log lines."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that drops requests the browser cancelled without a word
    (neuroglancer cancels chunk requests whenever the view moves)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(results: str | os.PathLike[str], host: str = SERVE_HOST, port: int = 0) -> _Server:
    """An HTTP server (not yet serving: call ``serve_forever``) of the folder ``results``
    with CORS, on ``host``:``port`` (0: any free port; see ``server_address``)."""
    handler = functools.partial(_CorsHandler, directory=str(results))
    return _Server((host, port), handler)
