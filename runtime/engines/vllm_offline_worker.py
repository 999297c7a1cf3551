"""The vLLM offline worker: ``vllm.LLM`` in the vLLM venv, driven over pipes with JSON lines.

Run by file path with the vLLM venv's interpreter (batchsafe is not installed there): stdlib
and vllm only. The adapter (:mod:`batchsafe.runtime.engines.vllm_offline`) starts it in its
own process group and talks to it through stdin (requests) and the original stdout
(answers); everything vLLM prints goes to stderr, which the adapter sends to a log file.

Protocol, one JSON object per line:

* the first request line is the configuration ``{"model_dir", "engine_args", "seed"}``; the
  worker builds ``LLM(model=model_dir, **engine_args)``, runs one greedy token (a build
  that starts can still die on its first forward pass) and answers
  ``{"ok": true, "ready": {versions, effective engine settings}}``;
* ``{"op": "generate", "id", "prompts": [[{role, content}, ...], ...], "max_tokens", "stop"}``
  renders each chat prompt with the model's chat template exactly as vLLM's chat endpoint
  does (template to text with ``add_generation_prompt``, then token ids with
  ``add_special_tokens=False``) and runs ALL prompts in ONE ``LLM.generate`` call with
  greedy ``SamplingParams`` (temperature 0, the plan's seed, neutral penalties); answers
  ``{"id", "ok": true, "results": [...], "running_max", "wall_s"}``;
* ``{"op": "shutdown"}`` (or end of stdin: the parent is gone) exits.

Any failure is answered ``{"ok": false, "error": "..."}``. SIGTERM (the parent's stop, or its
death through ``PR_SET_PDEATHSIG``) kills the worker's whole process group, engine core
included.
"""

from __future__ import annotations

import os
import sys

# Run by path, this file's folder would come first on sys.path, and its siblings (vllm.py,
# http.py) would shadow the real vllm and the stdlib: drop it before importing anything else.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

NEUTRAL = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
# Statistics are needed for the per-request schedule timestamps (batching evidence); they
# do not touch the numbers.
DEFAULT_ARGS = {"disable_log_stats": False}


def _die_with_group(signum, frame):  # pragma: no cover - runs in the worker
    # The engine core is a child process: take the whole group (we lead it) down with us.
    os.killpg(0, signal.SIGKILL)


def running_max(spans):
    """Most requests in flight at once, from (scheduled, last token) engine-core timestamps."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], -x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


class Worker:
    """One ``vllm.LLM`` and its chat renderer."""

    def __init__(self, cfg):
        import vllm
        from vllm import LLM

        self.vllm = vllm
        self.seed = int(cfg.get("seed", 0))
        args = {**DEFAULT_ARGS, **(cfg.get("engine_args") or {})}
        t0 = time.time()
        self.llm = LLM(model=cfg["model_dir"], **args)
        self.tok = self.llm.get_tokenizer()
        self.load_s = time.time() - t0
        first = self.generate([[{"role": "user", "content": "Hello"}]], 1, [])
        self.ready = self.facts(args, first)

    def facts(self, args, first):
        import platform

        import torch

        vc = self.llm.llm_engine.vllm_config
        mc, sc = vc.model_config, vc.scheduler_config
        return {"vllm_version": self.vllm.__version__, "torch_version": torch.__version__,
                "python": platform.python_version(), "engine_args": args,
                "effective": {"dtype": str(mc.dtype).replace("torch.", ""), "max_model_len": mc.max_model_len,
                              "seed": mc.seed, "enforce_eager": mc.enforce_eager,
                              "max_num_seqs": sc.max_num_seqs, "max_num_batched_tokens": sc.max_num_batched_tokens},
                "torch_threads": torch.get_num_threads(), "load_s": self.load_s,
                "first_generation_ok": bool(first["results"])}

    def render(self, messages):
        """Token ids of one chat prompt, as vLLM's chat endpoint renders it."""
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok.encode(text, add_special_tokens=False)

    def generate(self, prompts, max_tokens, stop):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = [self.render(m) for m in prompts]
        params = SamplingParams(n=1, temperature=0.0, seed=self.seed, max_tokens=int(max_tokens),
                                stop=list(stop) or None, **NEUTRAL)
        t0 = time.time()
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False)
        wall = time.time() - t0
        results, spans, preempt = [], [], 0
        for i, o in zip(ids, outs):
            c = o.outputs[0]
            results.append({"text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": len(i),
                            "completion_tokens": len(c.token_ids), "request_id": o.request_id})
            m = getattr(o, "metrics", None)
            if m is not None and getattr(m, "scheduled_ts", 0) and getattr(m, "last_token_ts", 0):
                spans.append((m.scheduled_ts, m.last_token_ts))
                preempt += int(getattr(m, "num_preemptions", 0) or 0)
        return {"results": results, "wall_s": wall, "calls": 1,
                "running_max": running_max(spans) if len(spans) == len(outs) else None, "preemptions": preempt}


def main():  # pragma: no cover - runs in the vLLM venv; exercised by the real-engine tests
    signal.signal(signal.SIGTERM, _die_with_group)
    # Answers go to the original stdout; vLLM's own prints and logs go to stderr (the log).
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    worker = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            if worker is None:
                worker = Worker(msg)
                answer({"ok": True, "ready": worker.ready})
                continue
            op = msg.get("op")
            if op == "shutdown":
                answer({"ok": True, "id": msg.get("id")})
                break
            if op != "generate":
                raise ValueError(f"unknown op {op!r}")
            answer({"ok": True, "id": msg.get("id"), **worker.generate(msg["prompts"], msg["max_tokens"],
                                                                       msg.get("stop") or [])})
        except Exception as exc:  # reported to the adapter, which raises it as an EngineError
            traceback.print_exc()
            answer({"ok": False, "id": None if not isinstance(locals().get("msg"), dict) else msg.get("id"),
                    "error": f"{type(exc).__name__}: {exc}"})
            if worker is None:
                break
    # Leave nothing behind: the engine core is in our group.
    sys.stderr.flush()
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    main()
