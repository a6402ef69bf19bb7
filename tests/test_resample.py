"""Resampling between the volume grid and the model grid, and the schedule's progress."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sam4em.tiling.resample import input_span, resample, resample_weights, scaled_length
from sam4em.train.schedule import lr_factor, run_progress


def test_half_scale_is_the_two_by_two_mean_and_identity_is_a_crop():
    image = np.random.default_rng(0).random((2, 64, 48)).astype(np.float32)
    half = resample(image, (64, 48), (32, 24))
    np.testing.assert_allclose(half, image.reshape(2, 32, 2, 24, 2).mean(axis=(2, 4)), atol=1e-6)
    crop = resample(image, (64, 48), (64, 48), (0, 0), (5, 20, 7, 30))
    np.testing.assert_array_equal(crop, image[:, 5:20, 7:30])


@settings(max_examples=40, deadline=None)
@given(
    n_in=st.integers(8, 120),
    scale=st.sampled_from([0.25, 0.5, 0.75, 1.5, 2.0]),
    data=st.data(),
)
def test_a_window_resamples_exactly_like_the_whole_axis(n_in, scale, data):
    n_out = scaled_length(n_in, scale)
    start = data.draw(st.integers(0, n_out - 1))
    stop = data.draw(st.integers(start + 1, n_out))
    line = np.random.default_rng(n_in).random((1, n_in)).astype(np.float32) * 255
    whole = resample(line, (1, n_in), (1, n_out))
    a, b = input_span(n_in, n_out, start, stop)
    part = resample(line[:, a:b], (1, n_in), (1, n_out), (0, a), (0, 1, start, stop))
    np.testing.assert_allclose(part, whole[:, start:stop], rtol=1e-6)
    first, weights = resample_weights(n_in, n_out, start, stop)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)  # a partition of unity
    assert (weights[:, 0] > 0).any() and (weights[:, -1] > 0).any()  # the span is tight
    with pytest.raises(ValueError, match="does not hold"):
        resample(line[:, a + 1 : b], (1, n_in), (1, n_out), (0, a + 1), (0, 1, start, stop))


def test_time_budget_drives_the_cosine():
    # steps budget alone: as before, the cosine spans the steps after the warm-up
    assert run_progress(10, 110, 10) == 0.0 and run_progress(110, 110, 10) == 1.0
    assert lr_factor(0, 10, 0.0) == pytest.approx(0.1)  # warm-up
    assert lr_factor(60, 10, run_progress(60, 110, 10)) == pytest.approx(0.05 + 0.95 * 0.5)
    # a minutes budget: elapsed time decides when it is further along than the steps
    assert run_progress(20, 10**6, 10, elapsed_s=30, budget_s=60) == pytest.approx(0.5)
    assert run_progress(20, 10**6, 10, elapsed_s=60, budget_s=60) == 1.0
    assert lr_factor(20, 10, 1.0) == pytest.approx(0.05)
    assert lr_factor(20, 10, 0.5) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2)))
