#!/usr/bin/env python3
"""Parse launch arguments with vLLM's own `vllm serve` parser (run with the vLLM venv's python).

Reads a JSON list on stdin; each item is {"argv": [...]} (the words after `vllm`, starting with
"serve"), optionally {"config": "<YAML text for --config>"} and {"llm_kwargs": {...}}.  Prints one
JSON object per item: {"ok": true, "args": {...}} with the parsed namespace (model_tag folded into
model as `vllm serve` does), or {"ok": false, "error": "..."}.  `llm_kwargs` must all be fields of
vLLM's EngineArgs (what LLM(**kwargs) passes on); building EngineArgs itself would look the model up.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def parser():
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    p = FlexibleArgumentParser(prog="vllm")
    sub = p.add_subparsers(dest="subparser")
    ServeSubcommand().subparser_init(sub)
    return p


def check(p, item: dict) -> dict:
    argv = list(item.get("argv") or [])
    with tempfile.TemporaryDirectory() as tmp:
        if "config" in item:
            path = os.path.join(tmp, "config.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(item["config"])
            argv += ["--config", path]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = p.parse_args(argv)
        except SystemExit as e:
            return {"ok": False, "error": err.getvalue().strip().splitlines()[-1:] or [f"exit {e.code}"]}
        except Exception as e:  # noqa: BLE001 - report whatever vLLM raises
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    if getattr(ns, "model_tag", None):
        ns.model = ns.model_tag
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(item.get("llm_kwargs", {})) - fields)
    if unknown:
        return {"ok": False, "error": f"not LLM/EngineArgs keyword arguments: {unknown}"}
    return {
        "ok": True,
        "args": {k: v for k, v in vars(ns).items() if isinstance(v, (str, int, float, bool, type(None)))},
    }


def main() -> int:
    items = json.load(sys.stdin)
    p = parser()
    for item in items:
        print(json.dumps(check(p, item)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
