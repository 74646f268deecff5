"""Model folders vLLM can start without downloading anything: a tiny random Llama-architecture model
(GQA) for end-to-end tests, and a local copy of any config with a generated tokenizer for
`--load-format dummy` (random weights: vLLM then needs only config.json and a tokenizer).

The tokenizer is a WordLevel vocabulary `t0 ... tN` plus `<s>`, `</s>`, `<unk>` at the config's ids,
built by the `tokenizers` package. That package lives in vLLM's environment, not in the planner's, so
the builder runs as a small script under vLLM's python (`python` argument).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.verify.interrupts import run_child

# 4 layers, hidden 256, 8 query heads sharing 2 KV heads of 32: 1,024 KV bytes per token in bf16
# (2 x 4 x 2 x 32 x 2), a few MiB of weights, start-up dominated by vLLM itself.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "vocab_size": 1024,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

TOKENIZER_TIMEOUT_S = 300.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
QUANT_SIDECARS = ("hf_quant_config.json", "quant_config.json", "generation_config.json")

# Runs under vLLM's python: argv = dest, vocab_size, bos_id, eos_id, unk_id.
_TOKENIZER_SCRIPT = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
dest, n, bos, eos, unk = sys.argv[1], *map(int, sys.argv[2:6])
vocab = {f"t{i}": i for i in range(n) if i not in (bos, eos, unk)}
vocab.update({"<s>": bos, "</s>": eos, "<unk>": unk})
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.add_special_tokens(["<s>", "</s>", "<unk>"])
tok.save(dest)
"""


def _first_id(value: Any, default: int) -> int:
    """bos/eos ids may be missing, an int, or a list (Llama 3 lists several eos ids)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else default


def special_ids(config: dict[str, Any]) -> tuple[int, int, int]:
    """(bos, eos, unk) ids inside the vocabulary; unk takes the first id the others leave free."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    bos = _first_id(text.get("bos_token_id", config.get("bos_token_id")), 1)
    eos = _first_id(text.get("eos_token_id", config.get("eos_token_id")), 2)
    unk = next(i for i in range(3) if i not in (bos, eos))
    return bos, eos, unk


def vocab_size(config: dict[str, Any]) -> int:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    size = text.get("vocab_size") or config.get("vocab_size")
    if not isinstance(size, int) or size < 3:
        raise PlannerError("config.json has no usable vocab_size: a tokenizer cannot be generated for it")
    return size


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def write_tokenizer(folder: Path, python: str, config: dict[str, Any] | None = None) -> None:
    """A WordLevel tokenizer covering every id of the model's vocabulary (random weights may emit any)."""
    config = config if config is not None else json.loads((folder / "config.json").read_text())
    bos, eos, unk = special_ids(config)
    size = vocab_size(config)
    if max(bos, eos) >= size:
        raise PlannerError(f"config.json: bos/eos ids ({bos}, {eos}) are outside the vocabulary of {size}")
    argv = [python, "-c", _TOKENIZER_SCRIPT, str(folder / "tokenizer.json"), str(size), str(bos), str(eos), str(unk)]
    try:  # killed and reaped on an interrupt, never orphaned
        run = run_child(argv, timeout=TOKENIZER_TIMEOUT_S)
    except OSError as e:
        raise PlannerError(f"cannot run {python} to generate a tokenizer: {e.strerror or e}") from None
    except subprocess.TimeoutExpired:
        raise PlannerError(f"generating a tokenizer with {python} took over {TOKENIZER_TIMEOUT_S:g} s") from None
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise PlannerError(
            f"generating a tokenizer with {python} failed: {last} (vLLM's environment provides `tokenizers`)"
        )
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": int(config.get("max_position_embeddings") or 2048),
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def write_tiny_model(folder: Path, python: str, **overrides: Any) -> Path:
    """config.json (TINY_LLAMA_CONFIG with `overrides`) and a tokenizer; weights come from
    `--load-format dummy`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {**TINY_LLAMA_CONFIG, **overrides}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(folder, python, config)
    return folder


def dummy_model_dir(source: Path, dest: Path, python: str) -> Path:
    """A folder for `--load-format dummy`: the source's config (and quantization sidecars), plus its
    tokenizer files, or a generated tokenizer when it has none. The source folder is not modified."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", dest / "config.json")
    for name in (
        *QUANT_SIDECARS,
        *TOKENIZER_FILES,
        "tokenizer_config.json",
        "special_tokens_map.json",
        "merges.txt",
        "added_tokens.json",
    ):
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)
    if not has_tokenizer(dest):
        for stale in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            (dest / stale).unlink(missing_ok=True)  # they would name a tokenizer class we do not provide
        write_tokenizer(dest, python)
    return dest
