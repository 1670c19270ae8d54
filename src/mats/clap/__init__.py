"""CLAP backends: a frozen audio-text embedding space, behind one small interface."""

from __future__ import annotations

from .base import CLAP, WindowEmbeddings, l2_normalize

__all__ = ["CLAP", "WindowEmbeddings", "l2_normalize", "load_clap", "DEFAULT_CLAP"]

DEFAULT_CLAP = "yamnet-minilm"


def load_clap(spec: str = DEFAULT_CLAP, device: str | None = None, **kwargs) -> CLAP:
    """Build a CLAP from a name or path.

    - ``"yamnet-minilm"`` (default): offline YAMNet tagger + all-MiniLM-L6-v2, aligned in MiniLM space.
    - ``"msclap-2023:PATH"`` / ``"msclap-2022:PATH"``: a Microsoft CLAP checkpoint file.
    - ``"laion:PATH_OR_HUB_ID"`` or a folder whose config.json says ``model_type: clap``: LAION-CLAP
      through transformers.
    """
    if spec in (DEFAULT_CLAP, "default"):
        from .default import DefaultCLAP
        return DefaultCLAP(device=device, **kwargs)
    kind, _, rest = spec.partition(":")
    if kind in ("msclap-2022", "msclap-2023", "msclap"):
        from .msclap import MSCLAP
        return MSCLAP(rest, version=kind.split("-")[-1] if "-" in kind else None, device=device, **kwargs)
    if kind == "laion":
        from .laion import LaionCLAP
        return LaionCLAP(rest, device=device, **kwargs)
    from pathlib import Path
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        import json
        if json.loads((p / "config.json").read_text()).get("model_type") == "clap":
            from .laion import LaionCLAP
            return LaionCLAP(str(p), device=device, **kwargs)
    if p.is_file() and p.suffix in (".pth", ".pt", ".ckpt", ".safetensors"):
        from .msclap import MSCLAP
        return MSCLAP(str(p), version=None, device=device, **kwargs)
    raise ValueError(
        f"unknown CLAP {spec!r}: use 'yamnet-minilm', 'msclap-2023:PATH', 'msclap-2022:PATH', "
        "'laion:PATH_OR_HUB_ID', or a path to such a checkpoint"
    )
