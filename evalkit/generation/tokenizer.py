"""A CLIP-style BPE tokenizer written to disk from code.

Pipelines built from configs with random weights (tiny test and demo models, `evalkit
profile --latency` on a preset) must build with no downloads, but diffusers pipelines load
their tokenizer from files. A byte-level vocabulary (every byte symbol plus its
end-of-word form) tokenizes any text, so prompts never fall through to a single
unknown token and different prompts give different embeddings.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for raw bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    symbols = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_clip_tokenizer(directory: Path, model_max_length: int = 77) -> Path:
    """Save a byte-level CLIP tokenizer folder (what a pipeline's `tokenizer/` holds)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    # A handful of merges so common words are shorter than their byte count.
    merges = ["t h", "th e</w>", "a n", "i n", "o n</w>", "e r</w>"]
    for m in merges:
        a, b = m.split(" ")
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(
        vocab=vocab,
        # (left, right) pairs, what tokenizers' BPE takes; transformers annotates merges as list[str]
        merges=[tuple(m.split(" ")) for m in merges],  # type: ignore[misc]
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(str(directory))
    return directory


def clip_vocab_size() -> int:
    """Vocabulary size of the tokenizer written above (text encoders must match it)."""
    return 256 * 2 + 6 + 2
