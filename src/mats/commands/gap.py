"""`mats gap`: measure a CLAP's audio-text modality gap, suggest the training noise, save the shift."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import add_format

log = logging.getLogger(__name__)


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "gap", help="measure the audio-text modality gap of a CLAP and suggest the training noise",
        parents=[common],
        description="Embed audio and texts with a CLAP, report the modality gap (centroid offset, "
                    "spreads, cosine statistics), suggest the Gaussian noise variance for text-only "
                    "training, and save the mean shift vector for the 'shift' bridge.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  mats gap --metadata data/esc50/metadata.jsonl            # paired captions/labels\n"
               "  mats gap --audio sounds/ --texts corpus.txt --out gap/   # unpaired\n")
    p.add_argument("--audio", nargs="+", default=[], metavar="PATH",
                   help="audio files or folders (a single folder with metadata.jsonl is read as paired)")
    p.add_argument("--texts", nargs="+", default=[], metavar="FILE_OR_STRING",
                   help="text files (.txt: one per line; .jsonl: captions/text/labels) or literal texts")
    p.add_argument("--metadata", metavar="FILE", help="metadata.jsonl (or its folder) pairing each file "
                   "with captions or labels: paired mode")
    p.add_argument("--unpaired", action="store_true", help="ignore a metadata.jsonl found in --audio")
    p.add_argument("--template", default="the sound of {label}",
                   help="text made from labels (default: %(default)r)")
    p.add_argument("--clap", default="yamnet-minilm", help="CLAP spec (default: %(default)s)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="gap", help="output folder (default: %(default)s)")
    p.add_argument("--model", metavar="DIR", help="also store the shift vector in this model folder (its "
                   "'shift' bridge then uses it); the CLAP must be the model's")
    p.add_argument("--max-audio", type=int, default=None, help="use at most this many audio files")
    p.add_argument("--batch-size", type=int, default=16, help="audio batch size")
    p.add_argument("--no-cache", action="store_true", help="do not use the text-embedding cache")
    p.add_argument("--no-plot", "--no-plots", dest="no_plot", action="store_true", help="do not draw gap.png")
    p.add_argument("--keep-going", action="store_true",
                   help="exit code 0 even when audio files were skipped (they are still named on stderr)")
    add_format(p, ("text", "jsonl"))
    p.set_defaults(func=_run)
    return p


def _embed_audio(clap, paths: list[Path], batch_size: int, quiet: bool = False) -> tuple[np.ndarray, list[int]]:
    """Embeddings of the readable files and their indices in ``paths``. A file the front end
    refuses (missing, empty, corrupt, ...) is reported on stderr, one line each, and left out: one
    bad clip in a folder of hundreds should not cost the measurement (the exit code says so)."""
    from tqdm.auto import tqdm

    from ..audio import AudioError

    out, kept, skipped = [], [], []
    for i in tqdm(range(0, len(paths), batch_size), desc="CLAP audio embeddings", unit="batch",
                  file=sys.stderr, disable=quiet or len(paths) <= batch_size):
        chunk = list(range(i, min(i + batch_size, len(paths))))
        try:
            out.append(clap.encode_audio([str(paths[j]) for j in chunk], batch_size=batch_size))
            kept += chunk
        except AudioError:
            for j in chunk:  # find the bad file(s) and keep the rest
                try:
                    out.append(clap.encode_audio([str(paths[j])]))
                    kept.append(j)
                except AudioError as e:
                    skipped.append(str(e))
    for msg in skipped:
        log.warning("mats gap: skipped %s", msg)
    if not kept:
        raise ValueError(f"none of the {len(paths)} audio files could be read")
    return np.concatenate(out), kept


def _refuse_if_none_exist(paths: list[Path]) -> None:
    """Nothing to measure is a usage error (exit 2); single files that are missing or unreadable
    are skipped and named later, and the run goes on with the rest."""
    import os
    if paths and not any(os.path.lexists(p) for p in paths):
        raise FileNotFoundError(f"no such audio file: {paths[0]}"
                                + (f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""))


def _embed_texts(clap, texts: list[str], use_cache: bool) -> np.ndarray:
    uniq = list(dict.fromkeys(texts))
    if use_cache:
        from ..data.cache import EmbeddingCache
        emb = np.asarray(EmbeddingCache().embed(uniq, clap, progress=len(uniq) > 1000))
    else:
        emb = np.asarray(clap.encode_text(uniq), dtype=np.float32)
    index = {t: i for i, t in enumerate(uniq)}
    return emb[[index[t] for t in texts]]


def _run(args) -> int:
    from ..audio import expand_audio_args, expand_paths
    from ..evaluation.gap import measure_gap, plot_gap, read_paired_metadata, read_texts, save_shift

    if args.model:  # checked before minutes of embedding, not after
        from ..config import read_model_config
        read_model_config(Path(args.model))
    meta = args.metadata
    if (meta is None and not args.unpaired and len(args.audio) == 1
            and (Path(args.audio[0]) / "metadata.jsonl").is_file()):
        meta = Path(args.audio[0]) / "metadata.jsonl"
    pairs = None
    if meta is not None:
        pairs = read_paired_metadata(meta, args.template)
        if args.audio and args.metadata is not None:
            wanted = {p.resolve() for p in expand_paths(args.audio)}
            pairs = [(f, t) for f, t in pairs if f.resolve() in wanted]
        if args.max_audio:
            pairs = pairs[:args.max_audio]
        if not pairs:
            raise ValueError("no audio files left to pair")
        _refuse_if_none_exist([f for f, _ in pairs])
        if args.texts:
            log.warning("mats gap: --texts is ignored in paired mode (texts come from the metadata)")
        paths = [f for f, _ in pairs]
    else:
        if not args.audio or not args.texts:
            raise ValueError("give --audio and --texts (unpaired), or --metadata (paired)")
        paths = expand_audio_args(args.audio)
        if args.max_audio:
            paths = paths[:args.max_audio]
        _refuse_if_none_exist(paths)
        texts = read_texts(args.texts, args.template)
        if not texts:
            raise ValueError("no texts given")

    from ..clap import load_clap
    clap = load_clap(args.clap, device=args.device)
    audio, kept = _embed_audio(clap, paths, args.batch_size, quiet=args.quiet)
    if pairs is not None:
        pairs = [pairs[i] for i in kept]
        rows = [i for i, (_, ts) in enumerate(pairs) for _ in ts]
        texts = [t for _, ts in pairs for t in ts]
        audio_rows = audio[rows]
    else:
        audio_rows = audio
    text_emb = _embed_texts(clap, texts, use_cache=not args.no_cache)
    paired = pairs is not None
    report = measure_gap(audio_rows, text_emb, paired=paired)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fp = clap.fingerprint()
    skipped = [str(paths[i]) for i in sorted(set(range(len(paths))) - set(kept))]
    doc = dict(report.to_dict(), clap=fp, clap_spec=args.clap, n_audio_files=len(paths),
               n_audio_used=len(kept), n_audio_skipped=len(skipped), skipped=skipped,
               n_distinct_texts=len(set(texts)))
    (out / "gap.json").write_text(json.dumps(doc, indent=1) + "\n")
    save_shift(report, out / "shift.safetensors", clap_fingerprint=fp)
    if not args.no_plot:
        plot_gap(audio_rows, text_emb, out / "gap.png", paired=paired,
                 title=f"{getattr(clap, 'name', args.clap)}: audio vs text (gap {report.offset_norm:.3f})")
    if args.format == "jsonl":
        print(json.dumps(doc))
    else:
        print(report.summary())
        if report.suggested_noise_variance is not None:
            print(f"suggested training noise variance: {report.suggested_noise_variance:.5f}")
    files = "gap.json, shift.safetensors, shift.npy" + ("" if args.no_plot else ", gap.png")
    log.info("wrote %s to %s", files, out)
    if args.model:
        from ..pipeline import MATS
        # refuses another CLAP; torch, since it writes the folder's weights back
        m = MATS.from_pretrained(args.model, clap=clap, device=args.device, runtime="torch")
        m.shift = report.shift
        m.save_pretrained(args.model)
        log.info("stored the shift vector in the model folder %s", args.model)
    if skipped:
        log.warning("mats gap: %d of %d audio files were skipped%s", len(skipped), len(paths),
                    "" if args.keep_going else " (exit code 1; --keep-going for 0)")
        return 0 if args.keep_going else 1
    return 0
