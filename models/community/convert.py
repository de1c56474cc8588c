"""``srserve convert IN.pth OUT.safetensors``: a pickled checkpoint to safetensors, offline, with a card.

The pickle is read by spandrel's restricted unpickler, which allows the few globals a
state dict needs (OrderedDict, tensor rebuilds, storages) and refuses every other:
a file whose pickle would run code fails here, before anything of it runs. The
network is detected before anything is written, so only a servable model is converted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save

from srserve.files import write_atomic
from srserve.models.community.detect import CommunityModelError, detect, import_spandrel
from srserve.models.community.licences import code_licence
from srserve.models.community.net import SpandrelNet, writes_itself
from srserve.models.community.reach import choose_tiling
from srserve.models.weights import count_parameters, sha256_file


def convert(source: Path, target: Path, *, licence: str | None = None) -> dict[str, Any]:
    """Convert ``source`` (.pth/.pt/.ckpt) to ``target`` (.safetensors) and write its card beside it
    (``target`` with ``.json``); returns the card. CommunityModelError for anything that cannot be done."""
    source, target = Path(source), Path(target)
    if target.suffix.lower() != ".safetensors":
        raise CommunityModelError(f"{target.name}: the output must be a .safetensors file")
    spandrel = import_spandrel()
    try:
        state = spandrel.ModelLoader().load_state_dict_from_file(source)
    except Exception as e:  # UnpicklingError for a forbidden global, and any unreadable file
        raise CommunityModelError(f"{source.name}: not loadable as a state dict ({type(e).__name__}: {e})") from e
    descriptor = detect(state, source.name)
    net = SpandrelNet(descriptor).eval()
    if writes_itself(net):
        net.run_one_at_a_time()
    tiling = choose_tiling(net)  # recorded, so that a server loading the file need not measure it
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(target, save(tensors, metadata={"converted_from": source.name}))
    arch = descriptor.architecture
    card = {
        "architecture": arch.id,
        "architecture_name": arch.name,
        "code_licence": code_licence(arch.id),
        "tags": list(descriptor.tags),  # spandrel's summary of the detected hyperparameters
        "scale": int(descriptor.scale),
        "purpose": descriptor.purpose,
        "parameters": count_parameters(descriptor.model),
        "sha256": sha256_file(target),
        "tiling": tiling.card(),
        "source_file": source.name,
        "source_sha256": sha256_file(source),
        **({"licence": licence} if licence else {}),
    }
    write_atomic(target.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())
    return card
