"""Data layer: the in-memory ImageSet, readers/writers per format, built-in datasets."""

from .imageset import ImageSet, to_uint8
from .io import detect_format, load, save

__all__ = ["ImageSet", "to_uint8", "load", "save", "detect_format"]
