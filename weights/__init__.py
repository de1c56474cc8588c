"""Package data: the shipped weights (safetensors) and their JSON cards.

:data:`srserve.models.catalog.DEFAULT_WEIGHTS_DIR` is this folder, in a source
tree as in an installed wheel.
"""
