"""srserve: the HTTP service around the upsamplers in :mod:`models`."""
