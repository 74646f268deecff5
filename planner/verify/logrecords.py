"""Log records and tracebacks of vLLM start-up logs: the splitting of raw lines into records (process
prefix, logger level, message) and the exception line that ends each traceback, for
`planner/verify/logparse.py`. Pure standard library."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# --------------------------------------------------------------------------------------------------
# Splitting raw lines into log records.
# tqdm writes its bar with '\r' and no newline, so the next record is glued onto the bar
# ('...33.14it/s](EngineCore pid=242) DEBUG ...'): a record starts at every process prefix and at
# every un-prefixed 'LEVEL MM-DD hh:mm:ss' header, wherever it sits on the physical line.

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_PROC = r"\([^()\n]*?\bpid=\d+[^()\n]*\)"  # (EngineCore_DP0 pid=7), (VllmWorker TP0 pid=9), (pid=3, ip=..)
_LEVEL = r"DEBUG|INFO|WARNING|ERROR|CRITICAL"
_TIME = r"\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?"  # vLLM's '%m-%d %H:%M:%S'
_RECORD_START = re.compile(rf"{_PROC}|(?<!\) )(?:{_LEVEL}) {_TIME} \[")
# One space after the prefix / header only: traceback lines keep their indentation.
_HEAD = re.compile(rf"(?:(?P<proc>{_PROC}) ?)?(?:(?P<level>{_LEVEL}) {_TIME} \[[^\]]*\] ?)?")


@dataclass(frozen=True)
class _Record:
    proc: str  # the process prefix, '' when none
    level: Optional[str]  # vLLM logger level; None for print()/tqdm/uvicorn/traceback output
    text: str  # the message, prefix and header removed


def _records(line: str) -> list[_Record]:
    out = []
    for piece in re.split(r"[\r\n]", _ANSI.sub("", line)):
        cuts = [m.start() for m in _RECORD_START.finditer(piece) if m.start() > 0]
        for start, end in zip([0] + cuts, cuts + [len(piece)]):
            head = _HEAD.match(piece, start, end)
            text = piece[head.end() : end].rstrip()
            out.append(_Record((head["proc"] or "").strip("()"), head["level"], text))
    return out


# Exceptions that only say "see above": the root cause is an earlier exception.
_WRAPPER = re.compile(r"See (?:the )?(?:root cause|stack trace)|EngineDeadError|Engine core initialization failed")


def _root_exception(exceptions: list[str]) -> Optional[str]:
    roots = [e for e in exceptions if not _WRAPPER.search(e)]
    return (roots or exceptions or [None])[-1]


# --------------------------------------------------------------------------------------------------
# Tracebacks: the final 'SomeError: message' line of a traceback explains any other failure.

_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:: \S|(?:Error|Exception|Exit|Interrupt)$)")
_NOT_CONTINUATION = re.compile(r"^(?:\s|Traceback|During handling|The above exception)|^$")
# pydantic's ValidationError (vLLM's config classes) puts the reason on the indented lines after
# '1 validation error for ModelConfig'; its '[type=..., input_value=...]' tail and the link are noise.
_VALIDATION = re.compile(r"\d+ validation errors? for \S+$")
_PYDANTIC_NOISE = re.compile(r"\s*\[type=.*$|^For further information visit \S+$")


class _Tracebacks:
    """Finds the exception line that ends each traceback, per process, and joins its continuation lines."""

    def __init__(self) -> None:
        self.open: set[str] = set()  # processes inside a traceback
        self.last: Optional[tuple[str, int]] = None  # (process, index) of an un-headed exception still growing
        self.validation = False  # that exception is pydantic's ValidationError

    def feed(self, rec: _Record, exceptions: list[str]) -> bool:
        """True when `rec` is the exception line that ends a traceback."""
        if rec.text.startswith("Traceback (most recent call last)"):
            self.open.add(rec.proc)
            self.last = None
            return False
        if self._continues(rec):
            _extend(exceptions, self.last[1], rec.text, self.validation)
            return False
        if self.last is not None and rec.proc == self.last[0]:
            self.last = None  # any other line from that process ends the message
        if rec.proc not in self.open or rec.text[0].isspace():
            return False
        self.open.discard(rec.proc)
        # Logged tracebacks below ERROR (warning + exc_info) are not failures.
        if not _EXCEPTION.search(rec.text) or rec.level not in (None, "ERROR", "CRITICAL"):
            return False
        exceptions.append(rec.text.strip())
        if rec.level is None:  # printed by the interpreter: the message may go on over several lines
            self.last = (rec.proc, len(exceptions) - 1)
            self.validation = bool(_VALIDATION.search(rec.text))
        return True

    def _continues(self, rec: _Record) -> bool:
        # An exception message printed over several lines ('OSError: ...\nCheck your connection ...');
        # a ValidationError's go on indented.
        if self.last is None or rec.level is not None or rec.proc != self.last[0] or _EXCEPTION.search(rec.text):
            return False
        return not _NOT_CONTINUATION.match(rec.text) or (self.validation and rec.text[:1].isspace())


def _extend(exceptions: list[str], index: int, line: str, validation: bool) -> None:
    """Join a continuation line onto the exception message. A ValidationError reads
    'header: field: reason; field: reason' (the field lines unindented, the reasons indented)."""
    text = _PYDANTIC_NOISE.sub("", line.strip()) if validation else line.strip()
    if not text:
        return
    if not validation:
        sep = " "
    elif line[:1].isspace() or _VALIDATION.search(exceptions[index]):
        sep = ": "
    else:
        sep = "; "
    exceptions[index] += sep + text
