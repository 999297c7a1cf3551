"""Launch side of the tensor-parallel axis: a TP size's flags and env on a server, and the
preflight checks that need the model directory.

The plan records each TP size as a variant ``{"size", "flags", "env"}``
(:func:`batchsafe.compiler.tensor_parallel.tp_variant`); :func:`apply` adds it after the
plan's and the kernel variant's flags/env, so the argv is ``<plan flags> <variant flags>
--tensor-parallel-size N`` and ``verify`` can rebuild exactly that from the plan.

vLLM shards attention heads over the TP ranks and refuses a size that does not divide
them ("Total number of attention heads (9) must be divisible by tensor parallel size
(2)", after loading for tens of seconds). The model directory's ``config.json`` says how
many heads there are, so :func:`problems` finds that before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchsafe.compiler.tensor_parallel import MULTICAST_OFF_ENV, TP_FLAG, TP_FLAG_ALIASES, plan_variant  # noqa: F401 (re-exported)


def apply(flags: list[str], env: dict[str, str], variant: dict[str, Any] | None) -> tuple[list[str], dict[str, str]]:
    """``flags`` and ``env`` with the TP variant's added last (unchanged without one)."""
    if not variant:
        return flags, env
    return ([*flags, *map(str, variant.get("flags") or [])],
            {**env, **{k: str(v) for k, v in (variant.get("env") or {}).items()}})


def _config(model_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Multimodal configs keep the language model's sizes under text_config.
    text = data.get("text_config")
    return {**data, **text} if isinstance(text, dict) else data


def problems(model_dir: Path, size: int | None, engine: str = "") -> list[str]:
    """Why ``model_dir`` cannot be served at TP ``size`` (empty: no objection found)."""
    if not size or size == 1:
        return []
    cfg = _config(model_dir)
    out = []
    who = f"engine {engine!r}: " if engine else ""
    heads = cfg.get("num_attention_heads")
    if isinstance(heads, int) and heads > 0 and heads % size:
        out.append(f"{who}tensor_parallel {size} does not divide the model's num_attention_heads ({heads}) in "
                   f"{model_dir / 'config.json'}; vLLM refuses to shard them (pick a size that divides {heads})")
    kv = cfg.get("num_key_value_heads")
    # vLLM replicates KV heads when there are fewer than the TP size: then the size must be a
    # multiple of them; otherwise they are sharded and must divide evenly.
    if isinstance(kv, int) and kv > 0 and (kv % size if kv >= size else size % kv):
        out.append(f"{who}tensor_parallel {size} cannot shard or replicate the model's {kv} key-value heads "
                   f"({model_dir / 'config.json'})")
    return out


def record_tp(argv: list[str]) -> str | None:
    """The TP size in a recorded argv (``--tensor-parallel-size N``, ``-tp N`` or their ``=``
    forms; the last one wins, as in argparse)."""
    found = None
    args = [str(a) for a in argv]
    for i, a in enumerate(args):
        name, eq, val = a.partition("=")
        if name in TP_FLAG_ALIASES:
            found = val if eq else (args[i + 1] if i + 1 < len(args) else None)
    return found
