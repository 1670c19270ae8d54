"""`mats export onnx`: a model folder as ONNX Runtime graphs (mats.onnx.export)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", help="export a model for ONNX Runtime (inference without torch)", parents=[common],
                       description="Export a model folder's LLM (LoRA merged, explicit KV cache), mapper and CLAP "
                                   "text encoder as optimised ONNX graphs, with the tokenizer and a manifest of "
                                   "sha256 checksums. `--runtime onnx` (and `auto`, see docs/speed.md) uses them.")
    p.add_argument("format", choices=("onnx",), help="the export format")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the offline default model)")
    p.add_argument("--out", metavar="DIR",
                   help="where to write the graphs (default: $MATS_HOME/onnx-cache/<content key>, where "
                        "inference looks for them; DIR/onnx inside the model folder is also used)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..config import DEFAULT_MODEL, from_dict, read_model_config
    from ..model_config import ModelConfig
    from ..onnx.export import Unsupported, ensure_exported, supported_llm

    folder = Path(args.model) if args.model else DEFAULT_MODEL
    raw = read_model_config(folder)
    config = from_dict(ModelConfig, raw.get("model"), f"{folder}/config.json: model")
    why = supported_llm(config.llm)
    try:
        if why is not None:
            raise Unsupported(why)
        out, manifest = ensure_exported(folder, config.llm, Path(args.out) if args.out else None,
                                        note=lambda line: log.info(line))
    except Unsupported as e:
        raise ValueError(f"cannot export {folder} to ONNX: {e}") from None
    sizes = {name: (out / name).stat().st_size for name in manifest["files"]}
    print(json.dumps({"out": str(out), "key": manifest["key"], "files": sizes}))
    return 0
