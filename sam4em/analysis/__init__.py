"""Measures across classes and what to annotate next, from the finished objects."""
