"""The decoding core of the transformers engine: prompts in, greedy sequences out.

Kept apart from the adapter (``transformers.py``) so the rules of one group's decoding
are in one short module. torch and transformers are imported inside functions (the
engine catalogue may import the adapter's module without them).

One group of K prompts is ONE ``model.generate`` call:

* Each prompt is the chat template's text tokenized with ``add_special_tokens=False``
  (the template writes what the model wants, as in the llama.cpp engine).
* Rows are LEFT-padded to the longest prompt with the pad token; the attention mask is 0
  on padding and 1 elsewhere. ``generate`` derives position ids from the mask
  (``cumsum(mask) - 1``), so a padded row sees the same positions as the prompt alone.
  What padding still changes is the SHAPE of every matmul (K rows, a longer prefill),
  which is the batch effect this engine measures.
* Decoding is greedy: the model's own ``generation_config`` is replaced by
  :func:`greedy_config` (``do_sample`` False, one beam, no temperature/top-k/top-p, no
  repetition penalty), because ``generate`` fills every field a caller leaves unset from
  the model's config (a checkpoint may ship sampling or penalty defaults). The next token
  is ``argmax`` of the logits with ties to the lowest id (torch's first maximum).
* Each row runs until an end-of-sequence token (the set :func:`eos_ids` gives) or
  ``max_tokens``; a finished row is fed the pad token until the whole group ends, which
  its own mask keeps out of other rows. Because decoding is causal, a row's tokens up to
  its own end are exactly what stopping there would give, so per-row ``max_tokens`` and
  stop strings are applied afterwards (:func:`finish`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REPLACEMENT = "\ufffd"


@dataclass
class Row:
    """One sequence's outcome: prompt and completion token ids, finish reason, text."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    finish: str = ""
    text: str = ""


def greedy_config(pad_id: int, eos: list[int], bos_id: int | None) -> Any:
    """The GenerationConfig every group decodes with (set as the model's own, see the module docstring)."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=1, temperature=None, top_k=None, top_p=None,
                            repetition_penalty=None, no_repeat_ngram_size=None, pad_token_id=pad_id,
                            eos_token_id=list(eos), bos_token_id=bos_id, use_cache=True)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the model config's ``eos_token_id`` (one or a list) and the tokenizer's eos."""
    found: list[int] = []
    for v in (getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, int) and x >= 0 and x not in found:
                found.append(x)
    return found


def pad_id(tokenizer: Any, eos: list[int]) -> int:
    """The tokenizer's pad token, else the first eos id (masked out either way)."""
    pid = tokenizer.pad_token_id
    return int(pid) if isinstance(pid, int) and pid >= 0 else eos[0]


def left_pad(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of K token lists, left-padded to the longest."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def generate(model: Any, prompts: list[list[int]], max_new: int, pad: int) -> list[list[int]]:
    """Greedy-decode K prompts in one ``generate`` call; each row's new tokens (padding included)."""
    import torch

    ids, mask = left_pad(prompts, pad)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new)
    return [row.tolist() for row in out[:, ids.shape[1]:]]


def decode(tokenizer: Any, tokens: list[int]) -> str:
    """Text of completion tokens (special tokens kept, no clean-up of spaces)."""
    return tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def finish(tokenizer: Any, row: Row, new: list[int], max_tokens: int, stops: tuple[str, ...],
           eos: list[int]) -> Row:
    """Apply this row's own end to its generated tokens.

    The first eos ends it ("stop"; the eos is neither counted nor in the text); else
    ``max_tokens`` ("length"). A stop string ends it at the token that completes it: that
    token is counted, the text is cut before the stop string ("stop"). A "length" text that
    ends inside a multi-byte character ends in U+FFFD from the decoder: those trailing
    U+FFFD are dropped (the llama.cpp engine drops the partial bytes).
    """
    toks, reason = [], "length"
    for t in new[:max_tokens]:
        if t in eos:
            reason = "stop"
            break
        toks.append(t)
    text = decode(tokenizer, toks)
    live = [s for s in stops if s]
    if live and any(s in text for s in live):
        for n in range(1, len(toks) + 1):  # the first prefix whose text holds a stop string
            head = decode(tokenizer, toks[:n])
            cut = [i for i in (head.find(s) for s in live) if i >= 0]
            if cut:
                toks, text, reason = toks[:n], head[:min(cut)], "stop"
                break
    elif reason == "length":
        text = text.rstrip(REPLACEMENT)
    row.tokens, row.finish, row.text = toks, reason, text
    return row


def run_batch(model: Any, tokenizer: Any, prompts: list[list[int]], max_tokens: list[int],
              stops: list[tuple[str, ...]], eos: list[int], pad: int) -> tuple[list[Row], dict[str, Any]]:
    """Decode K prompts together (K=1: the sequential baseline). Returns the rows and batch facts."""
    rows = [Row(list(p)) for p in prompts]
    new = generate(model, prompts, max(max_tokens), pad)
    for r, n, m, s in zip(rows, new, max_tokens, stops):
        finish(tokenizer, r, n, m, s, eos)
    width = max(len(p) for p in prompts)
    facts = {"group_size": len(prompts), "padded_prompt_len": width,
             "left_pad": [width - len(p) for p in prompts], "generated_steps": len(new[0]) if new else 0}
    return rows, facts
