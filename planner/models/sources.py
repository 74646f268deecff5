"""Where a model comes from: a bundled profile, a local path, or the Hugging Face Hub.

This is the I/O edge of the model step: it reads files (and, with the `[hub]` extra, the network)
and hands back plain data. Everything after it is pure.
"""

from __future__ import annotations

import difflib
import errno
import functools
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Optional
from urllib.parse import urlsplit

from planner.errors import PlannerError
from planner.input_files import MIB, read_bytes, read_text
from planner.models.safetensors import HEADER_LIMIT, HeaderTensor, parse_header, read_dir
from planner.paths import profiles_dir
from planner.profile_data import Bounds, data_error, load_document

QUANT_SIDECARS = ("hf_quant_config.json", "quant_config.json")
# The Hub's repo id rule: org and name of letters, digits, '-', '_', '.', at most 96 characters each.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


@dataclass(frozen=True)
class ModelSource:
    """The raw material for one model."""

    model_id: str
    """Hugging Face id for bundled and hub models; the path for local ones."""
    source: Literal["bundled", "local", "hub"]
    config: dict[str, Any]
    quant_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Quantization sidecar files by name (hf_quant_config.json)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Bundled profiles' meta.yaml: published parameter count, checkpoint size, quirks."""
    header_tensors: tuple[HeaderTensor, ...] | None = None
    """Tensors read from safetensors headers, when the checkpoint's files were available."""
    path: Path | None = None
    """Folder holding config.json (bundled or local)."""


JSON_LIMIT = 64 * MIB
"""config.json, sidecars and safetensors indexes: DeepSeek-V3's index, the largest seen, is 9 MiB."""
NAME_LIMIT = 1024


def _load_json(path: Path) -> dict[str, Any]:
    text = read_text(path, JSON_LIMIT, "JSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlannerError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: fix or re-download the file"
        ) from None
    except RecursionError:
        raise PlannerError(
            f"{path}: JSON nested too deeply to be a model config: pass a Hugging Face config.json"
        ) from None
    if not isinstance(data, dict):
        raise PlannerError(f"{path}: expected a JSON object: pass a Hugging Face config.json")
    return data


def _sidecars(folder: Path) -> dict[str, dict[str, Any]]:
    return {name: _load_json(folder / name) for name in QUANT_SIDECARS if _existing(str(folder / name)) is not None}


# ---- bundled ----------------------------------------------------------------------------------


def _models_root() -> Path:
    return profiles_dir() / "models"


@functools.cache
def _bundled_dirs() -> dict[str, Path]:
    """Lower-case `org/name` -> profile folder (a directory listing: no file is parsed)."""
    root = _models_root()
    if not root.is_dir():
        return {}
    return {
        f"{org.name}/{m.name}".lower(): m
        for org in root.iterdir()
        if org.is_dir()
        for m in org.iterdir()
        if (m / "config.json").is_file()
    }


Count = Annotated[int, Bounds(1, 1e15)]


class Meta(NamedTuple):
    """A bundled profile's meta.yaml (profiles/models/<org>/<name>/), every key checked."""

    id: str
    """The Hugging Face id: the profile's folder, `org/name`."""
    config_source: Optional[str] = None
    """Where config.json was taken from."""
    notes: Optional[str] = None
    aliases: tuple[str, ...] = ()
    """Other names the model is found by (`plan qwen3-8b`)."""
    params_published: Optional[Count] = None
    """The published parameter count the inspection is checked against; None: none trusted."""
    params_source: Optional[str] = None
    """Where `params_published` comes from (or why there is none)."""
    params_published_counts_scales: bool = True
    """False: the published total leaves the quantization block scales out."""
    checkpoint_bytes: Optional[Count] = None
    """The checkpoint's size (the safetensors index's total_size)."""
    checkpoint_bytes_source: Optional[str] = None
    checkpoint_quirks: tuple[Literal["rotary_inv_freq"], ...] = ()
    """What the checkpoint stores beyond what vLLM loads (rotary_inv_freq: each layer's inv_freq buffer)."""


@functools.cache
def _meta(folder: Path) -> Meta | None:
    path = folder / "meta.yaml"
    if not path.is_file():
        return None
    meta = load_document(path, Meta, "model profile metadata")
    if meta.id != f"{folder.parent.name}/{folder.name}":
        raise data_error(path, f"id: {meta.id!r} is not the profile's folder {folder.parent.name}/{folder.name}")
    for figure, source in (("params_published", "params_source"), ("checkpoint_bytes", "checkpoint_bytes_source")):
        if getattr(meta, figure) is not None and getattr(meta, source) is None:
            raise data_error(path, f"{figure} is given without {source}: name where the figure comes from")
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """A bundled profile's meta.yaml as a mapping of every `Meta` key (defaults filled); {} without one."""
    meta = _meta(folder)
    return meta._asdict() if meta is not None else {}


@functools.cache
def _aliases() -> dict[str, str]:
    """Alias -> lower-case id; parses every meta.yaml, so only used when the id itself misses."""
    out: dict[str, str] = {}
    for key, folder in _bundled_dirs().items():
        for alias in read_meta(folder).get("aliases") or ():
            out[str(alias).lower()] = key
        out.setdefault(key.split("/", 1)[1], key)  # the bare name works when unambiguous
    return out


def bundled_ids() -> list[str]:
    return sorted(str(read_meta(p).get("id") or k) for k, p in _bundled_dirs().items())


def bundled_model_types(architecture: str) -> list[str]:
    """The model_type of every bundled config whose `architectures` names this class (read only for an
    error message: what vLLM builds that class from)."""
    import json

    out = set()
    for p in _bundled_dirs().values():
        cfg = json.loads((p / "config.json").read_text())
        if architecture in (cfg.get("architectures") or ()):
            out.add(str(cfg.get("model_type")))
    return sorted(out)


def find_bundled(name: str) -> Path | None:
    key = name.strip().lower()
    dirs = _bundled_dirs()
    if key in dirs:
        return dirs[key]
    bare = [k for k in dirs if k.split("/", 1)[1] == key]
    if len(bare) == 1:  # what the alias table says too (a test keeps aliases off other models' names), unparsed
        return dirs[bare[0]]
    alias = _aliases().get(key)
    return dirs[alias] if alias else None


def _from_folder(folder: Path, model_id: str, source: Literal["bundled", "local"]) -> ModelSource:
    return ModelSource(
        model_id=model_id,
        source=source,
        config=_load_json(folder / "config.json"),
        quant_files=_sidecars(folder),
        meta=read_meta(folder) if source == "bundled" else {},
        header_tensors=None if source == "bundled" else _tuple(read_dir(folder)),
        path=folder,
    )


def _tuple(x: list[HeaderTensor] | None) -> tuple[HeaderTensor, ...] | None:
    return tuple(x) if x is not None else None


# ---- local ------------------------------------------------------------------------------------


def _existing(name: str) -> Path | None:
    """The path `name` names when something is there; None when nothing is (or the name cannot be a
    path); a one-line error when it is there but unreadable (permission problems are not "absent")."""
    try:
        path = Path(name).expanduser()
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError, RuntimeError, ValueError):  # RuntimeError: ~nosuchuser
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise PlannerError(f"{name}: cannot read ({exc.strerror}): check the path and its permissions") from None
    return path


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".json") or os.sep in name and _existing(name) is not None


def _local(name: str) -> ModelSource:
    path = _existing(name)
    if path is None:
        raise PlannerError(
            f"{name}: no such file or directory: pass a config.json, a model folder, or a bundled id "
            "(see `vllm-planner models`)"
        )
    if not path.is_dir():
        return ModelSource(
            model_id=str(path),
            source="local",
            config=_load_json(path),
            quant_files=_sidecars(path.parent),
            path=path.parent,
        )
    if _existing(str(path / "config.json")) is None:
        raise PlannerError(f"{name}: folder has no config.json: pass the folder of a Hugging Face checkpoint")
    return _from_folder(path, str(path), "local")


def did_you_mean(name: str) -> str:
    """ " (did you mean X?)" for the bundled ids and aliases nearest a typo, or ""."""
    key = name.strip().lower()
    names = {
        **{k: str(read_meta(p).get("id") or k) for k, p in _bundled_dirs().items()},
        **{a: str(read_meta(_bundled_dirs()[k]).get("id") or k) for a, k in _aliases().items()},
    }
    near = difflib.get_close_matches(key, list(names), n=3, cutoff=0.75)
    found = list(dict.fromkeys(names[n] for n in near))
    return f" (did you mean {' or '.join(found)}?)" if found else ""


# ---- hub --------------------------------------------------------------------------------------


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether a TCP connection to the Hub (HF_ENDPOINT) opens within `timeout` seconds. Offline,
    huggingface_hub retries for over 20 s with a warning per try; this answers first. The probe runs
    in a thread because name resolution ignores socket timeouts."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443))
    done, opened = threading.Event(), []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass
        done.set()

    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout)  # an unresolvable name fails at once; a black-holed address waits out the timeout
    return bool(opened)


def _hub(repo_id: str) -> ModelSource:
    alternatives = "use a bundled id (`vllm-planner models`) or a local config.json / checkpoint folder"
    near = did_you_mean(repo_id)
    try:
        import huggingface_hub as hf  # lazy: an optional extra, off the planning path
    except ImportError:
        raise PlannerError(
            f"{repo_id} is not bundled{near} and Hub access needs the extra: "
            f"pip install 'vllm-planner[hub]', or {alternatives}"
        ) from None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise PlannerError(f"{repo_id} is not bundled{near} and HF_HUB_OFFLINE=1: {alternatives}")
    token = os.environ.get("HF_TOKEN") or None
    offline = not _hub_reachable()  # then only what huggingface_hub has cached
    try:
        config_path = Path(hf.hf_hub_download(repo_id, "config.json", token=token, local_files_only=offline))
        quant: dict[str, dict[str, Any]] = {}
        for name in QUANT_SIDECARS:
            try:
                quant[name] = _load_json(Path(hf.hf_hub_download(repo_id, name, token=token, local_files_only=offline)))
            except Exception:  # most repos have no sidecar; any failure here just means none
                pass
        headers = _hub_headers(hf, repo_id, token, offline)
    except PlannerError:
        raise
    except Exception as exc:  # network, auth, 404: one line, never the token
        kind = exc.__class__.__name__
        if offline:
            raise PlannerError(
                f"{repo_id} is not bundled{near}, the Hugging Face Hub is not reachable and its config.json "
                f"is not in the local Hub cache: check your network, or {alternatives}"
            ) from None
        hint = (
            "the repo may be gated: set HF_TOKEN"
            if "401" in str(exc) or "403" in str(exc) or "Gated" in kind
            else "check the id and your network"
        )
        raise PlannerError(
            f"{repo_id}: could not fetch from the Hugging Face Hub ({kind}){near}; {hint}, or {alternatives}"
        ) from None
    return ModelSource(
        model_id=repo_id,
        source="hub",
        config=_load_json(config_path),
        quant_files=quant,
        header_tensors=headers,
        path=config_path.parent,
    )


def _cache_dir() -> Path:
    # PLANNER_CACHE; the old VLLM_PLANNER_CACHE still works (vLLM warns about unknown VLLM_* variables)
    return Path(
        os.environ.get("PLANNER_CACHE")
        or os.environ.get("VLLM_PLANNER_CACHE")
        or Path.home() / ".cache" / "vllm-planner"
    )


def _hub_headers(hf: Any, repo_id: str, token: str | None, offline: bool = False) -> tuple[HeaderTensor, ...] | None:
    """Safetensors headers by HTTP range requests (huggingface_hub does the ranges), cached."""
    cache = _cache_dir() / "hub" / repo_id.replace("/", "--") / "safetensors-headers.json"
    if cache.is_file():
        return tuple(parse_header(read_bytes(cache, HEADER_LIMIT, "cached header file"), str(cache)))
    if offline:
        return None  # the formula, as for a repo without safetensors
    try:
        meta = hf.get_safetensors_metadata(repo_id, token=token)
    except Exception:
        return None  # no safetensors in the repo: fall back to the formula
    merged: dict[str, Any] = {}
    for file_meta in meta.files_metadata.values():
        for name, info in file_meta.tensors.items():
            merged[name] = {"dtype": info.dtype, "shape": list(info.shape)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(merged))
    return tuple(parse_header(json.dumps(merged).encode(), repo_id))


# ---- entry point ------------------------------------------------------------------------------


def resolve(name: str) -> ModelSource:
    """A bundled id or alias, then a local path, then a Hub id (`org/name`)."""
    if not name or not name.strip():
        raise PlannerError(
            "no model given: pass a bundled id (see `vllm-planner models`), a config.json path or a model folder"
        )
    if len(name) > NAME_LIMIT or not name.isprintable():
        raise PlannerError(
            f"model name {name[:40]!r}... is not a model id or path (over {NAME_LIMIT} characters or "
            "with control characters): pass a bundled id, a config.json path or a model folder"
        )
    if _looks_like_path(name) or _existing(name) is not None and not find_bundled(name):
        return _local(name)
    folder = find_bundled(name)
    if folder is not None:
        meta_id = read_meta(folder).get("id") or f"{folder.parent.name}/{folder.name}"
        return _from_folder(folder, str(meta_id), "bundled")
    if name.count("/") == 1 and not name.startswith("/") and _HUB_ID.fullmatch(name):
        return _hub(name)
    shown = name if len(name) <= 100 else name[:100] + "..."
    raise PlannerError(
        f"unknown model {shown!r}{did_you_mean(name)}: not a bundled id or alias (see `vllm-planner models`), "
        "not an existing path, not an org/name Hub id"
    )
