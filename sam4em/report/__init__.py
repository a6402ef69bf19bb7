"""The per-dataset report: one self-contained HTML page, and its figures."""
