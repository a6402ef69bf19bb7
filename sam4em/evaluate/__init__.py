"""Evaluation of predictions against the labels of the test slices."""
