"""Inference on ONNX Runtime, the CPU default (:mod:`mats.runtimes` chooses): the model's graphs and
numpy around them, no torch or transformers.

* :mod:`.export` — a model folder's graphs (decoder with an explicit KV cache, mapper, MiniLM), written
  once and cached by content (the torch side: it imports torch to export);
* :mod:`.engine` — :class:`~mats.onnx.engine.OnnxModel`, which stands where ``MATSModel`` stands in
  :class:`mats.pipeline.MATS`, and the MiniLM text encoder, on ONNX Runtime sessions;
* :mod:`.decoding` — beam search and greedy decoding in numpy, transformers' rules step for step.
"""
