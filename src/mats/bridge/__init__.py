"""The gap bridge between CLAP audio embeddings and the text embeddings the model was trained on.

* :mod:`.noise` — the noise added to text embeddings during training (and to Santa's entries);
* :mod:`.santa` — Santa's clustered memory bank and the retrieval/mixing step;
* :mod:`.config` — :class:`BridgeConfig`: a bridge by name, its defaults resolved from the model's memory;
* :mod:`.bridges` — every inference bridge (none, noise, santa, nearest, projection, shift) applied;
* :mod:`.shift` — the 'shift' bridge's vector on disk;
* :mod:`.rng` — :class:`TorchCompatibleGenerator`: the seeded noise of inference without torch;
* :mod:`.blas` — one BLAS thread for the bridge's small products.

Inference (every bridge, Santa's search and step) imports no torch; k-means (building a memory) and
noise on torch tensors (training) import it when called.
"""

# Imported lazily: the CLI reads mats.bridge.config (names and defaults) without loading torch.
_WHERE = {
    "BRIDGES": "config", "DEFAULT_TAU": "config", "BridgeConfig": "config", "BridgeError": "config",
    "available_bridges": "config", "NOISE_KINDS": "config",
    "apply_bridge": "bridges", "projection": "bridges",
    "add_noise": "noise", "sample_noise": "noise",
    "SEARCH_MODES": "config", "SantaConfig": "santa", "SantaMemory": "santa", "kmeans": "santa",
    "load_shift": "shift", "save_shift": "shift", "TorchCompatibleGenerator": "rng",
}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BRIDGES",
    "DEFAULT_TAU",
    "BridgeConfig",
    "BridgeError",
    "apply_bridge",
    "available_bridges",
    "projection",
    "NOISE_KINDS",
    "add_noise",
    "sample_noise",
    "SEARCH_MODES",
    "SantaConfig",
    "SantaMemory",
    "kmeans",
    "load_shift",
    "save_shift",
    "TorchCompatibleGenerator",
]
