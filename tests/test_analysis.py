"""Cross-class measures (contact shells, nearest distances) block by block equal the
same measures on the whole volume; annotate-next ranks regions by their uncertainty."""

from __future__ import annotations

import math

import cc3d
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from sam4em.analysis.contacts import halo_voxels, object_analysis
from sam4em.analysis.settings import AnalysisSettings, flag_column
from sam4em.config import validate_config
from sam4em.errors import ConfigError
from sam4em.report.annotate_next import candidate_crops, candidate_edges, region_edges


def analysis(**changes) -> AnalysisSettings:
    base = dict(
        contacts=(("a", "b"),), distances=(("a", "b"),), shell_nm=12.0, contact_share=0.25,
        max_distance_nm=30.0, region_px=4, box=(1, 4, 4), rows=10,
    )  # fmt: skip
    return AnalysisSettings(**{**base, **changes})


def whole_volume(a_ids, b_mask, voxel, s: AnalysisSettings) -> pd.DataFrame:
    """The same columns, one object at a time over the whole volume (the reference)."""
    rows = []
    to_b = ndimage.distance_transform_edt(~b_mask, sampling=voxel) if b_mask.any() else None
    for i in range(1, int(a_ids.max()) + 1):
        own = a_ids == i
        d = ndimage.distance_transform_edt(~own, sampling=voxel)
        shell = (d > 0) & (d <= s.shell_nm + 1e-6)
        share = (shell & b_mask).sum() / shell.sum() if shell.any() else 0.0
        near = math.inf if to_b is None else float(to_b[own].min())
        rows.append({"id": i, "share": share, "near": near})
    table = pd.DataFrame(rows, columns=["id", "share", "near"])
    table.loc[table["near"] > s.max_distance_nm, "near"] = np.nan
    return table


@st.composite
def volumes(draw):
    shape = tuple(draw(st.integers(2, 12)) for _ in range(3))
    block = tuple(draw(st.integers(1, 7)) for _ in range(3))
    seed = draw(st.integers(0, 2**31))
    voxel = draw(st.sampled_from([(10.0, 4.0, 4.0), (5.0, 5.0, 5.0), (30.0, 3.0, 6.0)]))
    rng = np.random.default_rng(seed)
    a = cc3d.connected_components((rng.random(shape) < 0.15).astype(np.uint8), connectivity=6)
    b = rng.random(shape) < draw(st.floats(0.0, 0.5))
    return a.astype(np.uint32), b, block, voxel


@settings(max_examples=120, deadline=None)
@given(volumes())
def test_blockwise_contacts_and_distances_equal_the_whole_volume(case):
    a, b, block, voxel = case
    s = analysis()
    objects = pd.DataFrame({"id": np.arange(1, int(a.max()) + 1)})
    got = object_analysis(s, "a", objects, {"a": a, "b": b.astype(np.uint32)}, voxel, block)
    want = whole_volume(a, b, voxel, s)
    if not len(want):
        assert not len(got)
        return
    np.testing.assert_allclose(got["contact_b"], want["share"], atol=1e-12)
    np.testing.assert_array_equal(got["touches_b"], want["share"] >= s.contact_share)
    np.testing.assert_allclose(got["nearest_b_nm"], want["near"], atol=1e-9, equal_nan=True)


def test_contact_share_and_distance_of_known_shapes():
    """One voxel of a in a (50, 5, 5) nm grid, a 10 nm shell: the 12 in-plane voxels
    within two pixels; b fills the rows below it, 4 of them. A second object 7 pixels
    from b along x is 35 nm away, beyond a 30 nm bound it is empty."""
    a = np.zeros((3, 11, 21), np.uint32)
    a[1, 5, 5] = 1
    a[1, 8, 20] = 2
    b = np.zeros(a.shape, np.uint32)
    b[:, 6:, :14] = 7
    voxel = (50.0, 5.0, 5.0)
    s = analysis(shell_nm=10.0, max_distance_nm=40.0)
    objects = pd.DataFrame({"id": [1, 2]})
    for block in [(3, 11, 21), (1, 3, 4)]:
        got = object_analysis(s, "a", objects, {"a": a, "b": b}, voxel, block)
        assert got["contact_b"].tolist() == pytest.approx([4 / 12, 0.0])  # 2: b beyond 10 nm
        assert got["touches_b"].tolist() == [True, False]
        # object 1 sits on the row above b: 5 nm; object 2 on b's rows, 7 columns past it
        assert got["nearest_b_nm"].tolist() == pytest.approx([5.0, 35.0])
    far = object_analysis(analysis(max_distance_nm=30.0), "a", objects, {"a": a, "b": b},
                          voxel, (3, 11, 21))  # fmt: skip
    assert far["nearest_b_nm"].iloc[0] == 5.0 and np.isnan(far["nearest_b_nm"].iloc[1])


def test_halo_covers_the_width():
    assert halo_voxels(100.0, (50.0, 4.6, 4.6)) == (2, 21, 21)
    assert halo_voxels(49.0, (50.0, 50.0, 50.0)) == (0, 0, 0)


def config(**analysis_keys) -> dict:
    return validate_config(
        {
            "classes": ["glia", "mito", "synapse"],
            "datasets": {"d": {"raw": "r.tif", "voxel_size": [50, 5, 5]}},
            "analysis": analysis_keys,
        }
    )


def test_default_pairs_follow_the_configured_classes():
    s = AnalysisSettings.from_config(config())
    assert s.contacts == (("synapse", "glia"),) and s.distances == (("mito", "synapse"),)
    assert s.analysed_classes() == ["synapse", "mito"]
    assert flag_column("synapse", "glia") == "tripartite"
    assert flag_column("mito", "glia") == "touches_glia"
    only_mito = validate_config({**config(), "classes": ["mito", "er"]})
    assert AnalysisSettings.from_config(only_mito).analysed_classes() == []
    own = AnalysisSettings.from_config(config(contacts=[["mito", "glia"]], distances=[]))
    assert own.contacts == (("mito", "glia"),) and own.distances == ()


@pytest.mark.parametrize(
    ("pairs", "says"),
    [([["mito", "axon"]], "'axon' is not one of"), ([["mito", "mito"]], "names one class twice"),
     ([["mito", "glia"], ["mito", "glia"]], "listed twice")],
)  # fmt: skip
def test_bad_pairs_name_the_key(pairs, says):
    with pytest.raises(ConfigError, match=f"analysis.contacts: .*{says}"):
        AnalysisSettings.from_config(config(contacts=pairs))


def test_regions_and_candidate_crops():
    assert region_edges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    # candidate crops: every step, the last one moved back to end flush, whole boxes
    assert candidate_edges(10, 4) == [(0, 4), (4, 8), (6, 10)]
    assert candidate_edges(3, 4) == [(0, 3)]
    boxes = candidate_crops((5, 10, 8), (4, 4, 4))
    assert [b.box for b in boxes[:3]] == [
        ((0, 4), (0, 4), (0, 4)), ((0, 4), (0, 4), (4, 8)), ((0, 4), (4, 8), (0, 4))
    ]  # fmt: skip
    assert len(boxes) == 2 * 3 * 2 and all(b.shape == (4, 4, 4) for b in boxes)
