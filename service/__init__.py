"""srserve: the HTTP service around the upsamplers in :mod:`srserve.models`."""
