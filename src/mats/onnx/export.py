"""Exporting a model folder to ONNX Runtime graphs, once, for the torch-free inference path
(:mod:`mats.onnx.engine`).

What is exported:

- ``decoder.onnx``: the LLM with the LoRA merged, as one decoder pass over input embeddings with an
  explicit KV cache in two parts: each clip's prompt (shared by its beams, never copied or reordered)
  and each row's generated tokens (see :func:`decoder_module`); ``logits [rows, V]`` of the last
  position and the generated part with the new positions appended come out. The same graph is the
  prefill of one clip and every decode step. Llama-family LLMs only (RMSNorm, rotary positions,
  grouped-query attention, gated SiLU MLP): others stay on torch (:class:`Unsupported`);
- ``embeddings.npy``: the LLM's input embedding table (the prompt's token embeddings are looked up in
  numpy, so the decoder takes embeddings, as the torch path does);
- ``mapper.onnx``: CLAP embedding [B, clap_dim] -> prefix [B, prefix_length, H];
- ``minilm.onnx`` (+ ``minilm-tokenizer.json``): the default CLAP's text encoder, mean-pooled, before
  the L2 normalisation (as :class:`mats.clap.minilm.MiniLMTextEncoder` returns it);
- ``tokenizer.json`` and ``manifest.json``: the LLM's tokenizer; the prompt template split around the
  user's text (so no chat template engine runs at inference), special token ids, the sha256 of every
  file above and the content key of what was exported.

Graph optimisation is part of the export: each graph is written as ONNX Runtime's extended-level
optimised form (constant folding, redundant node elimination, the fusions that hold on every CPU), so a
session loads it without re-optimising, and its weights in ``<graph>.onnx.data`` beside it, which a
session maps into memory rather than copying out of the graph. The exports live in
``$MATS_HOME/onnx-cache/<key>/``, keyed by the content of the LLM, the adapter and the mapper (like the
merged LoRA), written through a folder name no other writer uses and moved into place whole;
``mats export onnx --out DIR`` writes the same files anywhere (a model folder's ``onnx/`` is used
before the cache).

This module needs torch and transformers (it exports from the torch modules); the inference side never
imports it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

from .. import store

__all__ = ["EXPORT_VERSION", "Unsupported", "DamagedExport", "export_key", "export_model", "ensure_exported",
           "check_export", "supported_llm", "decoder_module"]

# bump when the graphs, the manifest or the key change, so that old exports are not read
EXPORT_VERSION = "3"  # 3: each graph's weights in <graph>.onnx.data
MANIFEST = "manifest.json"
_CONTENT = "\x00mats-user-content\x00"  # stands for the user turn while the chat template is rendered


SUPPORTED_TYPES = ("llama",)  # what the decoder graph computes (and the tests check)


class Unsupported(ValueError):
    """The ONNX path cannot serve this model (its LLM is not of the Llama family, ...)."""


class DamagedExport(ValueError):
    """An export folder whose files do not match its manifest, or that belongs to another model."""


# -- what identifies an export ---------------------------------------------------------------------

def export_key(folder: Path, llm_spec: str) -> str:
    """Content key of a model folder's export: the LLM's weights and config, the adapter and the mapper
    (by content, never by path: another model at the same path gets another key)."""
    from ..llm import llm_digest, resolve_llm

    folder = Path(folder)
    h = hashlib.sha256(f"mats-onnx v{EXPORT_VERSION}\0".encode())
    h.update(f"llm:{llm_digest(*resolve_llm(llm_spec))}\0".encode())
    for name in ("lora/adapter_model.safetensors", "lora/adapter_config.json", "mapper.safetensors"):
        h.update(f"{name}:{store.cached_sha256(folder / name)}\0".encode())
    config = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model", {})
    h.update(json.dumps({k: config.get(k) for k in ("mapper", "prompt_style", "system_prompt")},
                        sort_keys=True).encode())
    return h.hexdigest()[:32]


def cache_dir(key: str) -> Path:
    return store.mats_home() / "onnx-cache" / key


def check_export(out: Path, key: str | None) -> dict:
    """The manifest of a complete, undamaged export in ``out`` (of the model with content key ``key``,
    when given). Raises :class:`DamagedExport` naming the first file that does not match."""
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DamagedExport(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("export_version") != EXPORT_VERSION:
        raise DamagedExport(f"{path}: not a mats ONNX export of version {EXPORT_VERSION}")
    if key is not None and manifest.get("key") != key:
        raise DamagedExport(f"{out}: the export is of another model (key {manifest.get('key')}, expected {key})")
    for name, digest in manifest.get("files", {}).items():
        f = Path(out) / name
        if not f.is_file():
            raise DamagedExport(f"{f}: missing")
        if store.cached_sha256(f) != digest:
            raise DamagedExport(f"{f}: sha256 does not match the manifest (damaged or replaced)")
    return manifest


def ensure_exported(folder: Path, llm_spec: str, out: Path | None = None, note=None) -> tuple[Path, dict]:
    """(folder, manifest) of a verified export of the model folder ``folder``: ``folder/onnx`` when it
    holds one of this very model, else ``out`` or the cache entry, exported now when missing. A damaged
    or foreign export there is reported in one line (``note``, default stderr) and exported again."""
    note = note or (lambda line: print(f"mats: {line}", file=sys.stderr))
    folder = Path(folder)
    key = export_key(folder, llm_spec)
    if out is None and (folder / "onnx" / MANIFEST).is_file():
        try:
            return folder / "onnx", check_export(folder / "onnx", key)
        except DamagedExport as e:
            note(f"{e}; using the cache instead")
    target = Path(out) if out is not None else cache_dir(key)
    if (target / MANIFEST).exists():
        try:
            return target, check_export(target, key)
        except DamagedExport as e:
            note(f"{e}; exporting again")
    start = time.perf_counter()
    note(f"exporting {folder.name} to ONNX Runtime graphs in {target} (once)")
    manifest = export_model(folder, target, key)
    note(f"ONNX export done in {time.perf_counter() - start:.1f} s")
    return target, manifest


# -- the export --------------------------------------------------------------------------------------

def export_model(folder: Path, out: Path, key: str | None = None) -> dict:
    """Export the model folder ``folder`` into ``out`` (replaced whole, atomically). Returns the manifest."""
    from ..config import from_dict, read_model_config
    from ..model import MATSModel, ModelConfig

    folder, out = Path(folder), Path(out)
    raw = read_model_config(folder)
    config = from_dict(ModelConfig, raw.get("model"), f"{folder}/config.json: model")
    key = key or export_key(folder, config.llm)
    model = MATSModel.from_pretrained(folder, device="cpu", dtype="fp32", config=config)
    check_supported(model.llm)
    staging = store.unique_partial(out)
    staging.mkdir(parents=True)
    try:
        manifest = _write_all(model, config, staging, key)
        out.parent.mkdir(parents=True, exist_ok=True)
        store.publish_dir(staging, out, lambda d: _complete(d, key))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _complete(out: Path, key: str) -> bool:
    try:
        check_export(out, key)
        return True
    except DamagedExport:
        return False


def supported_llm(llm_spec: str) -> str | None:
    """Why the ONNX path cannot serve the LLM ``llm_spec``, read from its config.json without loading it;
    None when it can or when that is only known once it is loaded (a GGUF file not yet de-quantised)."""
    from ..llm import resolve_llm

    folder, gguf = resolve_llm(llm_spec)
    config = folder / "config.json" if gguf is None else None
    if config is None or not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
    if model_type not in SUPPORTED_TYPES:
        return f"the ONNX path serves Llama-family LLMs; {model_type!r} is not one"
    return None


def check_supported(llm) -> None:
    """Raise :class:`Unsupported` unless ``llm`` is a Llama-family causal LM the decoder graph computes."""
    cfg = llm.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES or not hasattr(llm, "model"):
        raise Unsupported(f"the ONNX path serves Llama-family LLMs; {getattr(cfg, 'model_type', '?')!r} is not one")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", "llama3", "linear"):
        raise Unsupported(f"rope type {rope.get('rope_type')!r} is not exported (position-dependent scaling)")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise Unsupported(f"activation {cfg.hidden_act!r} is not exported")


def _write_all(model, config, out: Path, key: str) -> dict:
    import numpy as np
    import torch

    llm = model.llm
    cfg = llm.config
    files = {}
    with torch.inference_mode(False), torch.no_grad():
        _export_decoder(llm, out / "decoder.onnx")
        files["decoder.onnx"] = files["decoder.onnx.data"] = None
        emb = llm.get_input_embeddings().weight.detach().float().cpu().numpy()
        np.save(out / "embeddings.npy", np.ascontiguousarray(emb))
        files["embeddings.npy"] = None
        _export_mapper(model.mapper, config.mapper.clap_dim, out / "mapper.onnx")
        files["mapper.onnx"] = files["mapper.onnx.data"] = None
        if config.clap in ("yamnet-minilm", "default"):
            _export_minilm(out / "minilm.onnx", out / "minilm-tokenizer.json")
            files["minilm.onnx"] = files["minilm.onnx.data"] = files["minilm-tokenizer.json"] = None
    tokenizer = model.tokenizer
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    files["tokenizer.json"] = None
    template = _prompt_template(tokenizer, config)
    for name in files:
        files[name] = store.cached_sha256(out / name)
    manifest = {
        "export_version": EXPORT_VERSION, "key": key, "files": files,
        "llm": {"layers": int(cfg.num_hidden_layers), "kv_heads": int(cfg.num_key_value_heads),
                "head_dim": int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads),
                "hidden": int(cfg.hidden_size), "vocab": int(llm.get_output_embeddings().weight.shape[0])},
        "prefix_length": int(config.mapper.prefix_length),
        "eos_token_id": int(tokenizer.eos_token_id), "pad_token_id": int(tokenizer.pad_token_id),
        "prompt": template,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _prompt_template(tokenizer, config) -> dict:
    """The rendered prompt around the user turn, split at it, so the engine substitutes the user turn
    (task tag, instruction, hint) into plain strings. Checked on two different turns: a template
    that rewrites the turn's text cannot be split this way and is refused."""
    from ..prompts import AUDIO_PLACEHOLDER, render_prompt, user_turn

    before, after = render_prompt(tokenizer, "caption", _CONTENT, config.prompt_style, config.system_prompt)
    text = before + AUDIO_PLACEHOLDER + after
    turn = user_turn("caption", _CONTENT)
    i = text.find(turn)
    if i < 0:
        raise Unsupported("the chat template changes the user's text; the ONNX path cannot render it")
    template = {"head": text[:i], "tail": text[i + len(turn):]}
    for task, instruction, context in (("tags", "Tag  this: 'x'\n", "Similar sounds: a, b"), ("qa", "why?", None)):
        want = render_prompt(tokenizer, task, instruction, config.prompt_style, config.system_prompt, context)
        got = render_with(template, task, instruction, context)
        if tuple(got) != tuple(want):
            raise Unsupported("the chat template depends on the user's text; the ONNX path cannot render it")
    return template


def render_with(template: dict, task: str, instruction: str, context: str | None) -> tuple[str, str]:
    """Text before and after the audio prefix (what :func:`mats.prompts.render_prompt` gives), from an
    export's split template. Imports nothing heavy (the engine calls it)."""
    from ..prompts import AUDIO_PLACEHOLDER, user_turn

    text = template["head"] + user_turn(task, instruction, context) + template["tail"]
    before, _, after = text.partition(AUDIO_PLACEHOLDER)
    return before, after


# -- the graphs --------------------------------------------------------------------------------------

def _optimise(src: Path, dst: Path) -> None:
    """Save ONNX Runtime's extended-level optimised graph (the level whose result holds on any CPU), its
    weights in ``<dst>.data`` beside it: ONNX Runtime maps that file into memory instead of parsing and
    copying the weights out of the graph's protobuf, so a session starts in a fraction of the time
    (docs/speed.md, "ONNX Runtime")."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def _export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    import torch

    raw = path.with_name(path.stem + ".raw.onnx")
    # The tracer warns about shape checks it freezes and about advanced indexing; the graphs are held
    # against the torch modules on other shapes by tests/test_onnx.py, so a user is not shown them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(module, args, str(raw), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False, do_constant_folding=True)
    _optimise(raw, path)
    raw.unlink()
    for extra in path.parent.glob(path.stem + ".raw.onnx*"):
        extra.unlink()


def decoder_module(llm):
    """A plain torch module computing one decoder pass of ``llm`` (a Llama-family HF model, LoRA merged)
    over explicit KV tensors, in the layout the engine decodes with (also what the tests compare
    against HF's forward).

    The cache is in two parts. The *prompt* part is one per clip, ``prompt.{i}.key/value
    [clips, kv_heads, P, head_dim]`` with ``prompt_mask [clips, P]`` (the clips' prompts left-padded to
    one length); it is never copied per beam, reordered or grown. The *generated* part is one per row
    (``rows = clips x beams``, rows of a clip consecutive), ``past.{i}.key/value [rows, kv_heads, S,
    head_dim]``, the same length S for every row (all rows step together); ``present.{i}.*`` is it
    with the T new positions appended, causally masked among themselves. A prefill is a pass with an
    empty generated part and a masked one-position prompt; its ``present`` is the clip's prompt cache."""
    import torch
    from torch import nn

    class _Step(nn.Module):
        def __init__(self, llm):
            super().__init__()
            cfg = llm.config
            self.layers = llm.model.layers
            self.norm = llm.model.norm
            self.head = llm.get_output_embeddings()
            self.heads = int(cfg.num_attention_heads)
            self.kv_heads = int(cfg.num_key_value_heads)
            self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
            rotary = llm.model.rotary_emb
            self.register_buffer("inv_freq", rotary.inv_freq.detach().float().clone(), persistent=False)
            self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))

        def forward(self, inputs_embeds, position_ids, prompt_mask, *kv):
            n = len(self.layers)
            prompt, past = kv[:2 * n], kv[2 * n:]
            r, t, _ = inputs_embeds.shape
            c, p = prompt_mask.shape
            beams = r // c
            s = past[0].shape[2]
            h, kvh, d = self.heads, self.kv_heads, self.head_dim
            g = h // kvh
            freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            cos = (emb.cos() * self.rope_scale)[:, None]
            sin = (emb.sin() * self.rope_scale)[:, None]
            key_pos = torch.arange(s + t, device=inputs_embeds.device)
            query_pos = torch.arange(t, device=inputs_embeds.device) + s
            gen_allowed = (key_pos[None, :] <= query_pos[:, None])[None, None]  # [1, 1, t, s+t]
            row_mask = prompt_mask[:, None, :].expand(c, beams, p).reshape(r, p)
            prompt_allowed = (row_mask > 0)[:, None, None, :]  # [r, 1, 1, p]
            low = torch.tensor(torch.finfo(torch.float32).min)
            x = inputs_embeds
            presents = []

            def by_clip(y, width):  # [r, h, t, width] -> [c, kvh, beams*g*t, width]
                return y.reshape(c, beams, kvh, g, t, width).permute(0, 2, 1, 3, 4, 5).reshape(
                    c, kvh, beams * g * t, width)

            def by_row(y, width):  # the inverse
                return y.reshape(c, kvh, beams, g, t, width).permute(0, 2, 1, 3, 4, 5).reshape(r, h, t, width)

            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                hs = layer.input_layernorm(x)
                q = attn.q_proj(hs).view(r, t, h, d).transpose(1, 2)
                k = attn.k_proj(hs).view(r, t, kvh, d).transpose(1, 2)
                v = attn.v_proj(hs).view(r, t, kvh, d).transpose(1, 2)
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
                presents += [k, v]
                scores_p = by_row(torch.matmul(by_clip(q, d), prompt[2 * i].transpose(-1, -2)), p) * attn.scaling
                scores_p = torch.where(prompt_allowed, scores_p, low)
                kr = k[:, :, None].expand(r, kvh, g, s + t, d).reshape(r, h, s + t, d)
                vr = v[:, :, None].expand(r, kvh, g, s + t, d).reshape(r, h, s + t, d)
                scores_g = torch.matmul(q, kr.transpose(-1, -2)) * attn.scaling
                scores_g = torch.where(gen_allowed, scores_g, low)
                probs = torch.softmax(torch.cat([scores_p, scores_g], dim=-1), dim=-1)
                o = by_row(torch.matmul(by_clip(probs[..., :p], p), prompt[2 * i + 1]), d) \
                    + torch.matmul(probs[..., p:], vr)
                x = x + attn.o_proj(o.transpose(1, 2).reshape(r, t, h * d))
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            logits = self.head(self.norm(x[:, -1]))
            return (logits, *presents)

    return _Step(llm).eval()


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def decoder_names(layers: int) -> tuple[list[str], list[str], list[str]]:
    """Names of the decoder graph's prompt cache, generated-part cache and present inputs/outputs."""
    names = [f"{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return [f"prompt.{n}" for n in names], [f"past.{n}" for n in names], [f"present.{n}" for n in names]


def _export_decoder(llm, path: Path) -> None:
    import torch

    step = decoder_module(llm)
    cfg = llm.config
    layers = int(cfg.num_hidden_layers)
    c, beams, t, p, s = 2, 3, 2, 5, 4
    embeds = torch.randn(c * beams, t, int(cfg.hidden_size))
    positions = torch.arange(s, s + t)[None].expand(c * beams, t).contiguous() + p
    prompt_mask = torch.ones(c, p, dtype=torch.int64)
    prompt = [torch.randn(c, step.kv_heads, p, step.head_dim) for _ in range(2 * layers)]
    past = [torch.randn(c * beams, step.kv_heads, s, step.head_dim) for _ in range(2 * layers)]
    prompt_names, past_names, present_names = decoder_names(layers)
    axes = {"inputs_embeds": {0: "rows", 1: "new"}, "position_ids": {0: "rows", 1: "new"},
            "prompt_mask": {0: "clips", 1: "prompt"}, "logits": {0: "rows"}}
    axes.update({n: {0: "clips", 2: "prompt"} for n in prompt_names})
    axes.update({n: {0: "rows", 2: "past"} for n in past_names})
    axes.update({n: {0: "rows", 2: "total"} for n in present_names})
    _export(step, (embeds, positions, prompt_mask, *prompt, *past), path,
            ["inputs_embeds", "position_ids", "prompt_mask", *prompt_names, *past_names],
            ["logits", *present_names], axes)


def _export_mapper(mapper, clap_dim: int, path: Path) -> None:
    import torch

    x = torch.randn(2, clap_dim)
    # the encoder layers' fused inference kernel has no ONNX form: trace the plain operators
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(mapper.float().eval(), (x,), path, ["clap_embedding"], ["prefix"],
                {"clap_embedding": {0: "batch"}, "prefix": {0: "batch"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def minilm_module(path: Path | None = None):
    """(torch module: input_ids, attention_mask, token_type_ids -> mean-pooled states, tokenizer)."""
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    path = Path(path) if path is not None else store.model_dir("all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()

    class _Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    return _Pooled().eval(), tokenizer, path


def _export_minilm(path: Path, tokenizer_path: Path) -> None:
    import torch

    module, tokenizer, folder = minilm_module()
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2023, 102, 0]])
    mask = (ids > 0).long()
    _export(module, (ids, mask, torch.zeros_like(ids)), path, ["input_ids", "attention_mask", "token_type_ids"],
            ["pooled"], {n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask", "token_type_ids")}
            | {"pooled": {0: "batch"}})
    shutil.copyfile(folder / "tokenizer.json", tokenizer_path)
