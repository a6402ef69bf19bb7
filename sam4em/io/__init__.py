"""Reading EM volumes from common formats and writing the canonical zarr stores."""
