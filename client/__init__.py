"""srbatch: upscale whole folders through one or more running srserve replicas."""
