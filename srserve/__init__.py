"""srserve: image super-resolution and restoration, served.

One import namespace for the repository's top-level folders (mapped in
pyproject.toml): :mod:`srserve.models` (pure PyTorch), :mod:`srserve.service`
(the HTTP service), :mod:`srserve.client` (``srbatch``, no torch) and
:mod:`srserve.weights` (the shipped weights and their cards).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srserve")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
