"""The MATS model: mapper + LoRA-tuned LLM, conditioned on one CLAP embedding per sample.

The CLAP itself is not part of this module: training feeds CLAP *text* embeddings (plus noise),
inference feeds CLAP *audio* embeddings (through a gap bridge). Both arrive here as [B, clap_dim].

The model folder as a whole is written and read by :class:`mats.pipeline.MATS` (``save_pretrained`` /
``from_pretrained``); this class reads ``config.json``'s ``model`` section and owns its two weight
files: ``mapper.safetensors`` and ``lora/`` (peft adapter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .config import from_dict
from .llm import add_lora, load_llm, merge_lora
from .mapper import build_mapper
from .model_config import ModelConfig
from .prompts import render_prompt
from .tasks import Request, get_task

__all__ = ["IGNORE", "MATSModel", "ModelConfig", "Request"]

IGNORE = -100


def _check_safetensors(path: Path) -> None:
    """A damaged weights file is named in one line (safetensors' own error names no file)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as e:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())}); "
                         "the model folder is damaged") from None


class MATSModel(nn.Module):
    def __init__(self, config: ModelConfig, llm, tokenizer):
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        self.mapper = build_mapper(config.mapper)
        self._prompt_cache: dict[tuple, tuple[list[int], list[int]]] = {}
        # Beam search otherwise prefills the same prompt once per beam (8 prefills for a default
        # caption); the prompt's KV cache is computed once per clip and copied to the beams.
        self.prefill_once = True
        self.merged = False  # True when the LoRA is folded into the weights (inference only)
        # transformers hands the output layer the last position as a strided view; in a prefill of
        # several rows that makes the matmul copy the output weights once per row.
        head = llm.get_output_embeddings()
        if head is not None:
            head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, device: str | None = None, dtype: str | None = None,
                    llm=None, tokenizer=None) -> "MATSModel":
        """A fresh model (random mapper, zero-initialised LoRA) around the configured LLM, for
        training. ``dtype``: the frozen weights' (the trainer passes its step's precision); the
        mapper and LoRA are fp32 whatever it is."""
        if llm is None:
            llm, tokenizer = load_llm(config.llm, device=device, dtype=dtype)
        hidden = llm.config.hidden_size
        if config.mapper.llm_hidden != hidden:
            config.mapper.llm_hidden = hidden
        llm = add_lora(llm, config.lora)
        model = cls(config, llm, tokenizer)
        model.mapper.to(next(llm.parameters()).device)
        return model

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | None = None,
                        dtype: str | None = None, merge: bool = True,
                        config: ModelConfig | None = None) -> "MATSModel":
        """The mapper and LLM of a model folder. ``config``: its ``model`` section when the caller
        (``MATS.from_pretrained``, the folder's owner) has read and checked ``config.json`` already.
        ``merge``: fold the LoRA into the LLM weights (inference only: faster, no peft import;
        same tokens). ``merge=False`` keeps the peft wrapper, for saving or further training."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if config is None:
            cfg_path = folder / "config.json"
            if not cfg_path.is_file():
                raise FileNotFoundError(f"{folder} is not a MATS model folder (no config.json)")
            try:
                raw = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{cfg_path}: invalid JSON ({e}); the model folder is damaged") from None
            if not isinstance(raw, dict) or raw.get("format") != "mats":
                raise ValueError(f"{cfg_path} is not a MATS model config (missing 'format': 'mats')")
            config = from_dict(ModelConfig, raw["model"], "model")
        base, tokenizer = load_llm(config.llm, device=device, dtype=dtype)
        if base.config.hidden_size != config.mapper.llm_hidden:
            raise ValueError(
                f"{folder}: mapper was trained for an LLM with hidden size {config.mapper.llm_hidden}, "
                f"but {config.llm!r} has {base.config.hidden_size}")
        for name in ("mapper.safetensors", "lora/adapter_model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: missing {name}; the model folder is incomplete")
            _check_safetensors(folder / name)
        if merge:
            llm = merge_lora(base, folder / "lora", config.llm)
        else:
            from peft import PeftModel

            llm = PeftModel.from_pretrained(base, str(folder / "lora"), is_trainable=False)
        model = cls(config, llm, tokenizer)
        model.merged = merge
        model._lora_source = folder / "lora"
        state = load_file(str(folder / "mapper.safetensors"))
        missing, unexpected = model.mapper.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{folder}/mapper.safetensors does not match the config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        device_ = next(base.parameters()).device
        model.mapper.to(device_)
        model.eval()
        return model

    def save_weights(self, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Write ``mapper.safetensors`` and ``lora/``. ``state``: full trainable weights, when the live
        ones are sharded (FSDP) — by default the model's own parameters."""
        import copy

        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / "lora").mkdir(parents=True, exist_ok=True)
        if self.merged:
            self._save_merged_weights(folder, state)
            return
        from peft import get_peft_model_state_dict
        if state is None:
            # Every mapper and adapter weight, frozen or not: a model loaded for inference has
            # nothing that requires grad, and must still save completely.
            mapper = self.mapper.state_dict()
            adapter = get_peft_model_state_dict(self.llm, save_embedding_layers=False)
        else:
            mapper = {k[len("mapper."):]: v for k, v in state.items() if k.startswith("mapper.")}
            llm_state = {k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")}
            adapter = get_peft_model_state_dict(self.llm, state_dict=llm_state, save_embedding_layers=False)
        mapper = {k: v.detach().float().cpu().contiguous() for k, v in mapper.items()}
        save_file(mapper, str(folder / "mapper.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                  str(folder / "lora" / "adapter_model.safetensors"), metadata={"format": "pt"})
        # The adapter config names the base model as the config does (a registry name or the
        # user's path), never the de-quantised cache folder of the machine it was trained on.
        adapter_config = copy.copy(self.llm.peft_config["default"])
        adapter_config.base_model_name_or_path = self.config.llm
        adapter_config.save_pretrained(str(folder / "lora"))

    def load_trainable_from(self, folder: str | Path) -> None:
        """Start from another model folder's mapper and LoRA weights (same architecture)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("mapper.safetensors", "lora/adapter_model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"init_from {folder}: missing {name}")
        self._require_adapter("load_trainable_from")
        self.mapper.load_state_dict(load_file(str(folder / "mapper.safetensors")))
        result = set_peft_model_state_dict(self.llm, load_file(str(folder / "lora/adapter_model.safetensors")))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"init_from {folder}: LoRA weights do not fit this model "
                             f"(unexpected {result.unexpected_keys[:3]})")

    def _save_merged_weights(self, folder: Path, state) -> None:
        """A merged model is inference-only, so its adapter is still the one it was loaded from:
        write the mapper and copy the adapter (the merged weights are never unmerged)."""
        import shutil

        from safetensors.torch import save_file

        if state is not None:
            raise RuntimeError("save_weights(state=...): a model with the LoRA merged does not train")
        mapper = {k: v.detach().float().cpu().contiguous() for k, v in self.mapper.state_dict().items()}
        save_file(mapper, str(folder / "mapper.safetensors"))
        src, dst = self._lora_source, folder / "lora"
        if src.resolve() != dst.resolve():
            shutil.copyfile(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
        adapter_config = json.loads((src / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = self.config.llm
        (dst / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")

    def _require_adapter(self, what: str) -> None:
        if self.merged:
            raise RuntimeError(f"{what}: this model was loaded with the LoRA merged into the LLM "
                               "(inference only); load it with MATSModel.from_pretrained(..., merge=False)")

    # -- parameters -------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    runtime = "torch"

    @property
    def batch_invariant(self) -> bool:
        """Whether a clip's answer is the same in any batch: true for fp32 weights; bf16/fp16
        matmuls round differently with the batch's shape, so a few answers change with it."""
        return self.llm.get_input_embeddings().weight.dtype == torch.float32

    @property
    def device(self) -> torch.device:
        return next(self.mapper.parameters()).device

    # -- sequence building ------------------------------------------------------------------------
    def prompt_ids(self, task: str, instruction: str, context: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids of the prompt before and after the audio prefix."""
        key = (task, instruction, context)
        if key not in self._prompt_cache:
            before, after = render_prompt(self.tokenizer, task, instruction, self.config.prompt_style,
                                          self.config.system_prompt, context)
            enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
            if len(self._prompt_cache) > 10000:
                self._prompt_cache.clear()
            self._prompt_cache[key] = (enc(before), enc(after))
        return self._prompt_cache[key]

    def _answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"][: self.config.max_answer_tokens]
        return ids + [self.tokenizer.eos_token_id]

    def answer_token_count(self, requests: Sequence[Request]) -> int:
        """How many positions the loss looks at: answer tokens (truncated) + end of sequence."""
        return sum(len(self._answer_ids(r.answer)) for r in requests)

    def build_inputs(self, clap_embeddings: torch.Tensor, requests: Sequence[Request],
                     with_answers: bool) -> dict[str, torch.Tensor]:
        """inputs_embeds / attention_mask (/ labels). Right padding for training, left for generation."""
        device = self.device
        embed = self.llm.get_input_embeddings()
        prefix = self.mapper(clap_embeddings.to(device=device, dtype=torch.float32))
        prefix = prefix.to(embed.weight.dtype)
        pieces, labels = [], []
        for i, req in enumerate(requests):
            before, after = self.prompt_ids(get_task(req.task).name, req.instruction, req.context)
            answer = self._answer_ids(req.answer) if with_answers else []
            ids_before = torch.tensor(before, device=device, dtype=torch.long)
            ids_after = torch.tensor(after + answer, device=device, dtype=torch.long)
            seq = torch.cat([embed(ids_before), prefix[i], embed(ids_after)])
            pieces.append(seq)
            n_prompt = len(before) + prefix.shape[1] + len(after)
            labels.append([IGNORE] * n_prompt + answer)
        length = max(p.shape[0] for p in pieces)
        hidden = pieces[0].shape[1]
        inputs = torch.zeros(len(pieces), length, hidden, device=device, dtype=pieces[0].dtype)
        mask = torch.zeros(len(pieces), length, device=device, dtype=torch.long)
        label_t = torch.full((len(pieces), length), IGNORE, device=device, dtype=torch.long)
        for i, (p, lab) in enumerate(zip(pieces, labels, strict=True)):
            n = p.shape[0]
            sl = slice(0, n) if with_answers else slice(length - n, length)
            inputs[i, sl] = p
            mask[i, sl] = 1
            label_t[i, sl] = torch.tensor(lab, device=device)
        out = {"inputs_embeds": inputs, "attention_mask": mask}
        if with_answers:
            out["labels"] = label_t
        return out

    def forward(self, clap_embeddings: torch.Tensor, requests: Sequence[Request],
                reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy over answer tokens (+ end of sequence) only; prompt and prefix
        positions are ignored. ``reduction="sum"`` lets the trainer normalise by a global token count."""
        batch = self.build_inputs(clap_embeddings, requests, with_answers=True)
        targets = batch.pop("labels")[:, 1:]
        hidden = self.llm.get_decoder()(**batch).last_hidden_state[:, :-1]
        # The output layer (576 x 49k) only where the loss looks: answer tokens are ~1/5 of the
        # positions, and the full logits tensor was the largest activation of the step.
        keep = targets != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[keep]).float()
        return nn.functional.cross_entropy(logits, targets[keep], reduction=reduction)

    @torch.inference_mode()
    def generate(self, clap_embeddings: torch.Tensor, requests: Sequence[Request], streamer=None,
                 **decoding) -> list[str]:
        """The answers, stripped. ``streamer``: transformers' streamer interface (``put``/``end``,
        e.g. :class:`mats.streaming.TextDeltas`), given the tokens as they are decoded; greedy
        decoding of one request only (transformers' rule)."""
        batch = self.build_inputs(torch.as_tensor(clap_embeddings), requests, with_answers=False)
        tok = self.tokenizer
        # The prompt is inputs_embeds, so there are no prompt ids: repetition penalty and n-gram
        # blocking act on the generated tokens, as intended. They are given as our own processors
        # rather than generate's options: for repetition_penalty, transformers takes each row's left
        # padding for a prompt length to skip, so in a padded batch (questions of different
        # lengths) the first generated tokens of shorter prompts escaped the penalty and a clip's
        # answer depended on its batch; both options also warned on every call.
        from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor
        processors = LogitsProcessorList(decoding.pop("logits_processor", None) or [])
        penalty = decoding.pop("repetition_penalty", None)
        if penalty is not None and float(penalty) != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(float(penalty)))
        ngram = decoding.pop("no_repeat_ngram_size", None)
        if ngram:
            processors.append(NoRepeatNGramLogitsProcessor(int(ngram)))
        if penalty is not None:
            decoding["repetition_penalty"] = 1.0
        if ngram is not None:
            decoding["no_repeat_ngram_size"] = 0
        beams = int(decoding.get("num_beams") or 1)
        if self.prefill_once and beams > 1 and batch["inputs_embeds"].shape[1] > 1:
            batch["cache"] = self._prompt_cache_for_beams(batch, beams)
        if streamer is not None:
            decoding["streamer"] = streamer
        out = self.llm.generate(**batch, do_sample=False, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id, logits_processor=processors, **decoding)
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    def _prompt_cache_for_beams(self, batch: dict[str, torch.Tensor], beams: int):
        """KV cache of all prompt positions but the last, computed once per row and repeated for the
        beams; generate then runs only the last position, as its own prefill would have. Positions
        follow the left padding exactly as generate derives them from the attention mask."""
        from transformers import DynamicCache

        embeds, mask = batch["inputs_embeds"][:, :-1], batch["attention_mask"][:, :-1]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = DynamicCache(config=self.llm.config)
        self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                               cache=cache, use_cache=True)
        cache.batch_repeat_interleave(beams)
        return cache
