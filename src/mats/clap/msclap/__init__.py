"""Microsoft CLAP (MS-CLAP 2022 / 2023) from a local checkpoint, with no network access.

Pointing at real weights
------------------------
MS-CLAP ships ``CLAP_weights_2023.pth`` (HTSAT audio encoder + GPT-2 text encoder, 1024-d, 44.1 kHz,
7 s windows; the CLAP used by MATS) and ``CLAP_weights_2022.pth`` (CNN14 + BERT, 1024-d, 44.1 kHz,
5 s windows) in the ``microsoft/msclap`` hub repository. The checkpoint already holds the text
encoder's weights; what it lacks is the text model's tokenizer (and config), so also keep a copy of
``gpt2`` (2023) or ``bert-base-uncased`` (2022) — any folder written by ``save_pretrained`` or a hub
snapshot. On a machine with hub access::

    huggingface-cli download microsoft/msclap CLAP_weights_2023.pth --local-dir ~/models/msclap
    huggingface-cli download openai-community/gpt2 --local-dir ~/models/msclap/gpt2

then::

    load_clap("msclap-2023:~/models/msclap/CLAP_weights_2023.pth", text_model="~/models/msclap/gpt2")

``text_model`` may be omitted when the folder sits beside the checkpoint under the name ``gpt2``
(2023) or ``bert-base-uncased`` (2022), or when the model is in the local Hugging Face cache.
``version`` is detected from the weights when not given (``"msclap:PATH"`` or a bare ``.pth`` path).

Safety: checkpoints are read with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only, never arbitrary pickled objects) or from ``.safetensors``. If an old checkpoint
cannot be read that way, :func:`convert_checkpoint` rewrites it as safetensors once, and only when
called with ``trust_pickle=True`` on a file you trust.

Why not the ``msclap`` package: msclap 1.3.4 pins ``transformers<5`` and ``numpy<2`` (this project
runs transformers 5 / numpy 2), downloads the checkpoint and ``gpt2``/``bert-base-uncased`` from the
hub by name, unpickles checkpoints with full ``torch.load`` and crops long audio at random. The
architecture is therefore rebuilt here with the checkpoint's exact parameter names; sizes (widths,
depths, heads, window, mel bins, FFT size, projection size) are read from the weights themselves.

Preprocessing follows the original: 44.1 kHz mono, log-mel front end as torchlibrosa computes it
(reflect-padded STFT as a convolution with the checkpoint's own DFT kernels, power spectrum, the
checkpoint's own mel matrix ``melW``, 10·log10), hop 320, then the encoder. Windows are cut
deterministically by the shared :class:`~mats.clap.base.CLAP` windowing (no random crop).
"""

from .checkpoint import VERSIONS, CheckpointError, convert_checkpoint, detect_version, load_state_dict
from .wrapper import MSCLAP, MSCLAPModel

__all__ = ["MSCLAP", "MSCLAPModel", "CheckpointError", "load_state_dict", "convert_checkpoint",
           "detect_version", "VERSIONS"]
