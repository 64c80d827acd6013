"""`python -m wcodec`: the same command line as `wcodec`."""
from .cli import entry

entry()
