"""Loading one community model file: safetensors only, detected by spandrel, with a JSON sidecar.

``NAME.safetensors`` is served as ``NAME``. ``NAME.json`` beside it (optional; ``srserve convert``
writes one) may set ``display_name``, ``licence`` (of the weights), ``description``, and ``scale`` where
spandrel's detection cannot tell it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from srserve.models.community.licences import code_licence
from srserve.models.community.net import SpandrelNet, writes_itself
from srserve.models.weights import count_parameters, sha256_file

#: What a sidecar may set; anything else in it is kept in the card but not read.
SIDECAR_KEYS = ("display_name", "licence", "description", "scale")
#: A served name: what a query parameter and a metric label can carry.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: spandrel purposes served: an upscaler (SR) or an x1 restorer. Faces and inpainting need more than an image.
PURPOSES = {"SR": "upscale", "Restoration": "restore"}


class CommunityModelError(ValueError):
    """A model file that cannot be served; the message names the file and why."""


@dataclass
class CommunityModel:
    """One detected model file: its network and its card (what ``/v1/models`` lists)."""

    name: str
    path: Path
    net: SpandrelNet
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.card["task"])


def model_files(folder: Path) -> list[Path]:
    """The model files in ``folder``: every ``*.safetensors``, and any ``*.pth``/``*.pt``/``*.ckpt``, which
    :func:`load_model_file` refuses with the conversion command (the server never unpickles)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CommunityModelError(f"{folder}: not a folder of model files")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt"))


def import_spandrel() -> Any:
    try:
        import spandrel
    except ImportError as e:  # the extra is not installed (or torchvision does not match torch)
        raise CommunityModelError(
            f"serving model files needs spandrel and torchvision: pip install 'srserve[community]' ({e})"
        ) from e
    return spandrel


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise CommunityModelError(f"{sidecar.name}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise CommunityModelError(f"{sidecar.name}: must hold a JSON object, with any of {list(SIDECAR_KEYS)}")
    scale = data.get("scale")
    if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 16):
        raise CommunityModelError(f"{sidecar.name}: scale must be an integer from 1 to 16, not {scale!r}")
    return data


def detect(state: dict[str, torch.Tensor], label: str) -> Any:
    """spandrel's descriptor for a state dict, or CommunityModelError saying why it cannot be served."""
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        known = sorted(a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures())
        raise CommunityModelError(f"{label}: no architecture spandrel knows matches it; known: {known}") from None
    except Exception as e:  # a known architecture whose tensors do not fit it
        raise CommunityModelError(f"{label}: detected but not loadable ({type(e).__name__}: {e})") from e
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose not in PURPOSES:
        raise CommunityModelError(
            f"{label}: a {descriptor.architecture.name} model for {descriptor.purpose}; "
            f"srserve serves {sorted(PURPOSES)} models (image in, image out)"
        )
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise CommunityModelError(
            f"{label}: takes {descriptor.input_channels} and gives {descriptor.output_channels} channels; "
            "srserve serves RGB models (3 in, 3 out)"
        )
    return descriptor


def load_model_file(path: Path, device: torch.device | str = "cpu") -> CommunityModel:
    """Detect and load ``path`` (``.safetensors``) on ``device``; CommunityModelError if it cannot be served."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CommunityModelError(
            f"{path.name}: srserve loads .safetensors files only (a pickle can run code); convert it offline "
            f"with: srserve convert {path.name} {path.stem}.safetensors"
        )
    if not NAME.match(path.stem):
        raise CommunityModelError(f"{path.name}: the file's stem is the model's name: letters, digits, . _ - only")
    sidecar = read_sidecar(path)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CommunityModelError(f"{path.name}: not a readable safetensors file ({e})") from e
    digest = sha256_file(path)
    if sidecar.get("sha256") not in (None, digest):
        raise CommunityModelError(f"{path.name}: its sha256 is {digest}, not the {sidecar['sha256']} its card says")
    if "sha256" not in sidecar:  # a measured tiling is trusted only from a card tied to this very file
        sidecar.pop("tiling", None)
    descriptor = detect(state, path.name)
    if sidecar.get("scale") is not None and sidecar["scale"] != descriptor.scale:
        raise CommunityModelError(
            f"{path.name}: the sidecar says scale {sidecar['scale']}, the network upscales by {descriptor.scale}"
        )
    net = SpandrelNet(descriptor).to(device).eval()
    if writes_itself(net):
        net.run_one_at_a_time()
    arch = descriptor.architecture
    req = descriptor.size_requirements
    card = {
        **sidecar,
        "source": "community",
        "architecture": arch.id,
        "architecture_name": arch.name,
        "code_licence": code_licence(arch.id),
        "licence": str(sidecar.get("licence", "unknown")),
        "purpose": descriptor.purpose,
        "task": PURPOSES[descriptor.purpose],
        "scale": int(descriptor.scale),
        "parameters": count_parameters(net),
        "tags": list(descriptor.tags),
        "size_requirements": {"minimum": req.minimum, "multiple_of": req.multiple_of, "square": req.square},
        "supports_half": bool(descriptor.supports_half),
        "supports_bfloat16": bool(descriptor.supports_bfloat16),
        "sha256": digest,
        "reentrant": net.reentrant,
    }
    return CommunityModel(path.stem, path, net, card)
