"""Community model files: architectures detected by spandrel, served by the same engine.

A ``.safetensors`` file (never a pickle) is detected with spandrel
(:mod:`.detect`), wrapped under the engine's module contract (:mod:`.net`), and its
tiling decided from the network itself (:mod:`.reach`): an exact halo where its
receptive field is finite and tiles are measured to stitch bit for bit, the whole
image otherwise. ``.pth`` files are converted offline (:mod:`.convert`).

spandrel (and the torchvision it needs) is imported only when a model file is
loaded: the built-in models need neither.
"""

from srserve.models.community.detect import CommunityModelError, load_model_file, model_files
from srserve.models.community.net import SpandrelNet
from srserve.models.community.reach import Tiling, choose_tiling

__all__ = ["CommunityModelError", "SpandrelNet", "Tiling", "choose_tiling", "load_model_file", "model_files"]
