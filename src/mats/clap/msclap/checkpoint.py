"""Reading MS-CLAP checkpoints safely and telling the 2022 model from the 2023 one.

The file format is the one risky input of this backend (pickles, truncated downloads, other models'
weights), so everything that touches the raw state dict, and the one place allowed to unpickle
(``convert_checkpoint(..., trust_pickle=True)``), lives here apart from the network code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..laion import CheckpointError

# What the original configs say (msclap configs/config_2022.yml, config_2023.yml, htsat config.py).
VERSIONS = {
    "2022": dict(audio="Cnn14", text="bert", sample_rate=44100, duration=5, hop=320, text_len=100,
                 mel_sr=44100, fmin=50, fmax=14000, text_names=("bert-base-uncased", "google-bert/bert-base-uncased")),
    # HTSAT builds its mel filters from its own config module (32 kHz, 50-14000 Hz), not from the
    # yml; the checkpoint's melW is what is actually used, the default below only mirrors it.
    "2023": dict(audio="HTSAT", text="gpt2", sample_rate=44100, duration=7, hop=320, text_len=77,
                 mel_sr=32000, fmin=50, fmax=14000, text_names=("gpt2", "openai-community/gpt2")),
}
_HTSAT = "audio_encoder.base.htsat."
_CNN = "audio_encoder.base."
_TEXT = "caption_encoder.base."
# Buffers older transformers versions saved that current ones no longer have (harmless to skip).
_BENIGN_UNEXPECTED = re.compile(
    r"^caption_encoder\.base\.(h\.\d+\.attn\.(bias|masked_bias)|embeddings\.position_ids)$")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an MS-CLAP checkpoint safely: ``{'model': state_dict}`` / a bare state dict in a
    ``.pth`` (weights_only) or a ``.safetensors`` file. ``module.`` prefixes (DDP) are removed."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"MS-CLAP checkpoint {str(p)!r} does not exist (expected e.g. "
                              "CLAP_weights_2023.pth from the microsoft/msclap repository)")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            sd = load_file(str(p))
        except Exception as e:
            raise CheckpointError(f"{p} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            hint = ("it is not a PyTorch checkpoint or it is truncated/corrupt; download it again"
                    if "Unsupported global" not in str(e) and "weights_only" not in str(e) else
                    "it contains pickled Python objects besides tensors; if you trust the file, convert it "
                    "once with mats.clap.msclap.convert_checkpoint(SRC, DST, trust_pickle=True)")
            raise CheckpointError(f"cannot read MS-CLAP checkpoint {p} with weights_only=True: {hint} "
                                  f"({type(e).__name__}: {msg})") from e
        sd = obj
        for key in ("model", "state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{p} does not hold a state dict of tensors (found {type(sd).__name__}); "
                              "expected an MS-CLAP checkpoint ({'model': state_dict})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, trust_pickle: bool = False) -> Path:
    """Rewrite a checkpoint as safetensors. Unpickling can run code: only with ``trust_pickle=True``."""
    from safetensors.torch import save_file

    if not trust_pickle:
        try:
            sd = load_state_dict(src)
        except CheckpointError as e:
            raise CheckpointError(f"{e}\n(pass trust_pickle=True only for a file from a trusted source)") from e
    else:
        obj = torch.load(str(Path(src).expanduser()), map_location="cpu", weights_only=False)
        sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
        sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    dst = Path(dst).expanduser()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dst), metadata={"format": "pt", "source": "msclap"})
    return dst


def detect_version(sd: dict) -> str:
    if any(k.startswith(_HTSAT) for k in sd):
        return "2023"
    if any(k.startswith(_CNN + "conv_block1.") for k in sd):
        return "2022"
    sample = ", ".join(list(sd)[:5])
    raise CheckpointError("not an MS-CLAP checkpoint: no HTSAT (audio_encoder.base.htsat.*) or CNN14 "
                          f"(audio_encoder.base.conv_block1.*) audio encoder weights; first keys: {sample}")


def _need(sd: dict, key: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"MS-CLAP checkpoint lacks {key!r}: truncated, or a different model")
    return sd[key]
