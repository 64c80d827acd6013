"""`wcodec.numpy`: save_file / load_file for dicts of numpy arrays (like safetensors.numpy)."""

from .numpy_api import load_file, save_file

__all__ = ["save_file", "load_file"]
