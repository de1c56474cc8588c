"""The licence of each architecture's code in spandrel 0.4.2 (its ``architectures/*/__arch/LICENSE``).

Weights carry their own licence, which only their publisher can state: the sidecar's ``licence``.
"""

from __future__ import annotations

CODE_LICENCES: dict[str, str] = {
    "ATD": "Apache-2.0",
    "AuraSR": "CC-BY-SA-4.0",
    "CRAFT": "Apache-2.0",
    "Compact": "BSD-3-Clause",
    "DAT": "Apache-2.0",
    "DCTLSA": "Apache-2.0",
    "DITN": "Apache-2.0",
    "DRCT": "MIT",
    "DRUNet": "MIT",
    "DnCNN": "MIT",
    "ESRGAN": "Apache-2.0",
    "FBCNN": "Apache-2.0",
    "FDAT": "MIT",
    "FFTformer": "MIT",
    "GFPGAN": "Apache-2.0 (with third-party components)",
    "GRL": "MIT",
    "HAT": "MIT",
    "HVICIDNet": "MIT",
    "IPT": "Apache-2.0",
    "KBNet": "MIT",
    "LaMa": "Apache-2.0",
    "MMRealSR": "BSD-3-Clause",
    "MixDehazeNet": "MIT",
    "MoESR": "MIT",
    "MoSR": "MIT",
    "NAFNet": "MIT",
    "OmniSR": "Apache-2.0",
    "PLKSR": "MIT",
    "RCAN": "MIT",
    "RGT": "Apache-2.0",
    "RealCUGAN": "MIT",
    "RestoreFormer": "Apache-2.0 (with third-party components)",
    "RetinexFormer": "MIT",
    "SAFMN": "Apache-2.0",
    "SAFMNBCIE": "Apache-2.0",
    "SCUNet": "Apache-2.0",
    "SPAN": "Apache-2.0",
    "SeemoRe": "Apache-2.0",
    "SwiftSRGAN": "CC0-1.0",
    "Swin2SR": "Apache-2.0",
    "SwinIR": "Apache-2.0",
    "Uformer": "MIT",
}


def code_licence(architecture_id: str) -> str:
    return CODE_LICENCES.get(architecture_id, "unknown")
