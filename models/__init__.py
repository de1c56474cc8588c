"""Upsampling models: pure PyTorch, no knowledge of the service.

Importing this package registers every architecture in :data:`MODELS`; no
weights are read until :func:`srserve.models.weights.load_model` is called.
"""

from srserve.models import deconv, espcn, resize, unpool  # noqa: F401  (registration side effects)
from srserve.models.registry import MODELS, ModelSpec, UnknownModelError

__all__ = ["MODELS", "ModelSpec", "UnknownModelError"]
