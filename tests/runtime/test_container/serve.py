"""Entrypoint of the test image: vLLM's OpenAI-server arguments -> ``python3 -m llama_cpp.server``.

The container launcher passes an image the arguments vLLM's images take (their entrypoint
is ``vllm.entrypoints.openai.api_server``). This image serves the same OpenAI API with a
real engine small enough for CI, llama-cpp-python's ``llama_cpp.server``, so its
entrypoint maps the arguments it understands and refuses any other (exit 2, naming it):
a plan flag this image cannot honour must fail the launch, not be dropped.

    --model DIR                  the one *.gguf file in DIR (mounted read-only at /model)
    --served-model-name NAME     --model_alias NAME (the id /v1/models lists)
    --host H / --port P          the same
    --max-model-len N            --n_ctx N
    --seed S                     --seed S
    --disable-uvicorn-access-log accepted (llama_cpp.server logs no access lines by default)

Threads: ``LLAMA_N_THREADS`` from the container env (default 1: the same numbers on any host).
"""

import os
import sys
from pathlib import Path

MAP = {"--served-model-name": "--model_alias", "--host": "--host", "--port": "--port",
       "--max-model-len": "--n_ctx", "--seed": "--seed"}


def main(argv: list[str]) -> int:
    out, model, i = [], None, 0
    while i < len(argv):
        flag = argv[i]
        if flag == "--disable-uvicorn-access-log":
            i += 1
            continue
        if flag not in MAP and flag != "--model":
            print(f"batchsafe-serve: unsupported argument {flag!r} (this image maps only --model, "
                  f"{', '.join(MAP)}, --disable-uvicorn-access-log)", file=sys.stderr, flush=True)
            return 2
        if i + 1 >= len(argv):
            print(f"batchsafe-serve: {flag} needs a value", file=sys.stderr, flush=True)
            return 2
        if flag == "--model":
            model = argv[i + 1]
        else:
            out += [MAP[flag], argv[i + 1]]
        i += 2
    if model is None:
        print("batchsafe-serve: --model is required", file=sys.stderr, flush=True)
        return 2
    ggufs = sorted(Path(model).glob("*.gguf")) if Path(model).is_dir() else [Path(model)]
    if len(ggufs) != 1 or not ggufs[0].is_file():
        print(f"batchsafe-serve: --model {model} must be a GGUF file or a folder holding exactly one "
              f"(found {[g.name for g in ggufs]})", file=sys.stderr, flush=True)
        return 2
    threads = os.environ.get("LLAMA_N_THREADS", "1")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ggufs[0]), *out,
           "--n_threads", threads, "--n_threads_batch", threads]
    print("batchsafe-serve: " + " ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)  # the server becomes PID 1's program: docker stop reaches it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
