"""Training tiles and z-sequences cut from ``volume.zarr``."""
