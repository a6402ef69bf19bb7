"""sam4em: prompt-free Segment Anything for 3D electron-microscopy volumes."""

__version__ = "0.1.0"
