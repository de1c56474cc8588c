"""Community model files of ``SR_MODELS_DIR``: detected when the app is built (a bad file stops start-up
there, with its name and why), measured for tiling while the models warm up (:meth:`ModelPool.load`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from srserve.models.community import CommunityModelError, load_model_file, model_files
from srserve.models.community.detect import CommunityModel
from srserve.models.registry import MODELS, DuplicateModelError, ModelSpec, Registry

log = logging.getLogger("srserve")


def load_folder(folder: Path, device: torch.device, *, skip_bad: bool) -> list[CommunityModel]:
    """Every servable file of ``folder``; a file that is not raises CommunityModelError, or with
    ``skip_bad`` is logged and left out."""
    models = []
    for path in model_files(folder):
        try:
            if path.stem in MODELS:
                raise CommunityModelError(f"{path.name}: {path.stem!r} is a built-in model's name; rename the file")
            models.append(load_model_file(path, device))
        except CommunityModelError as e:
            if not skip_bad:
                raise
            log.error("left out (SR_SKIP_BAD_MODELS): %s", e)
    if not models:
        log.warning("%s holds no model file that can be served", folder)
    return models


def not_buildable(**_: object) -> torch.nn.Module:
    raise TypeError("a community model is loaded from its file, not built by name")


def catalog(community: list[CommunityModel]) -> Registry:
    """The built-in models' specs and the community models', one registry per server (names stay unique)."""
    registry = Registry()
    for spec in MODELS:
        registry.add(spec)
    for m in community:
        description = str(m.card.get("description") or f"{m.card['architecture_name']} ({m.path.name})")
        scales = (int(m.card["scale"]),)
        try:
            registry.add(ModelSpec(m.name, not_buildable, "learned", scales, description, m.task))
        except DuplicateModelError:  # NAME.safetensors and NAME.SAFETENSORS, say
            raise CommunityModelError(f"{m.path.name}: another file is served as {m.name!r} already") from None
    return registry
