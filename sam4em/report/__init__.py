"""The per-dataset report: one self-contained HTML page, and its figures."""

#: where ``sam4em view --serve`` serves a results folder unless told otherwise (here, not
#: in ``viewer``, so that the command line reads it without importing zarr)
SERVE_HOST, SERVE_PORT = "127.0.0.1", 8000
