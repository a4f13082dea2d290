"""madseg: find where a segmentation model fails in the wild and fix it (MAD competition, human in the loop)."""

__version__ = "0.1.0"
