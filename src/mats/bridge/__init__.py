"""The gap bridge between CLAP audio embeddings and the text embeddings the model was trained on.

* :mod:`.noise` — the noise added to text embeddings during training (and to Santa's entries);
* :mod:`.santa` — Santa's clustered memory bank and the retrieval/mixing step;
* :mod:`.bridges` — every inference bridge (none, noise, santa, nearest, projection, shift) by name.
"""

from .bridges import BRIDGES, DEFAULT_TAU, BridgeConfig, BridgeError, apply_bridge, projection
from .noise import NOISE_KINDS, NoiseConfig, add_noise, l2_normalize, sample_noise
from .santa import SEARCH_MODES, SantaConfig, SantaMemory, kmeans

__all__ = [
    "BRIDGES",
    "DEFAULT_TAU",
    "BridgeConfig",
    "BridgeError",
    "apply_bridge",
    "projection",
    "NOISE_KINDS",
    "NoiseConfig",
    "add_noise",
    "l2_normalize",
    "sample_noise",
    "SEARCH_MODES",
    "SantaConfig",
    "SantaMemory",
    "kmeans",
]
