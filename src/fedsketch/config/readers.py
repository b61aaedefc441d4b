"""The one checked reader of every input file: UTF-8 text, TOML, JSON, JSON lines and CSV.

A config, a suite, a theta or pilots JSON, a run's ``metrics.jsonl`` and a profile CSV are all read
here, so every one of them fails the same way: a :class:`ReadError` (bad input, exit 2) whose
message is one line naming the file and, where there is one, the line (``FILE, line N: ...``) and
what is wrong. Pure standard library: imports no fedsketch module, so the config may use it.

What the callers check on top (the keys, types and ranges of the records) they report with
:func:`where`, in the same form.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: what a truncated JSON value may end in after the point where the parser gave up: part of a
#: number or a literal (``1.``, ``tr``), or nothing
_PARTIAL_TOKEN = re.compile(r"[\w.+\-]*")
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class ReadError(ValueError):
    """An input file that cannot be read as what it should be; the message names the file (and line)."""


def where(path: str | Path, line: int | None = None) -> str:
    """``FILE`` or ``FILE, line N``: how every message here starts."""
    return f"{path}, line {line}" if line is not None else str(path)


def short(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: a bad value quoted in a one-line message."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>"
    except RecursionError:
        return f"<a {type(value).__name__} nested too deeply>"
    return text if len(text) <= width else text[: width - 3] + "..."


def read_bytes(path: str | Path, *, key: str | None = None) -> bytes:
    """The bytes of ``path``; a missing file, a folder or an unreadable file is a :class:`ReadError`.

    ``key`` (the config key or option that named the file) starts the message when given.
    """
    path = Path(path)
    lead = f"{key}: " if key else ""
    if path.is_dir():
        raise ReadError(f"{lead}{path} is a folder, not a file")
    if not path.is_file():
        raise ReadError(f"{lead}file not found: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ReadError(f"{lead}cannot read {path}: {e.strerror or e}") from None


def decode(data: bytes, path: str | Path) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped); else "FILE: not UTF-8 text (byte N)"."""
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        byte = skip + e.start
        line = data.count(b"\n", 0, byte) + 1
        raise ReadError(f"{path}: not UTF-8 text (byte {byte}, line {line}); save it as UTF-8") from None


def read_text(path: str | Path, *, key: str | None = None) -> str:
    """The UTF-8 text of ``path`` (:func:`read_bytes`, :func:`decode`)."""
    return decode(read_bytes(path, key=key), path)


def parse_toml(text: str, path: str | Path) -> dict[str, Any]:
    """TOML text of ``path`` as a dict; "FILE, line N: not valid TOML: why" otherwise."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        at = _TOML_AT.search(msg)
        line = int(at.group(1)) if at else None
        why = msg[: at.start()] + f" (column {at.group(2)})" if at else msg
        raise ReadError(f"{where(path, line)}: not valid TOML: {why}") from None
    except RecursionError:
        raise ReadError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ReadError(f"{path}: not valid TOML: {e}") from None


def read_toml(path: str | Path, *, key: str | None = None) -> dict[str, Any]:
    """A TOML file as a dict (UTF-8; the line of a syntax error named)."""
    return parse_toml(read_text(path, key=key), path)


def parse_json(text: str, path: str | Path, line: int | None = None) -> Any:
    """JSON text of ``path`` (or of its line ``line``); "FILE, line N: not valid JSON: why" otherwise.

    ``NaN`` and ``Infinity`` parse (a diverged run records a NaN loss); callers check the values.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = line if line is not None else e.lineno
        raise ReadError(f"{where(path, at)}: not valid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ReadError(f"{where(path, line)}: not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ReadError(f"{where(path, line)}: not valid JSON: {e}") from None


def read_json(path: str | Path, *, key: str | None = None) -> Any:
    """A JSON file (UTF-8; the line of a syntax error named)."""
    return parse_json(read_text(path, key=key), path)


def _truncated(line: str) -> bool:
    """Whether ``line`` is the start of a JSON object cut off mid-way (not a garbled one)."""
    text = line.strip()
    if not text.startswith("{"):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # a whole value and more after it
            return False
        return e.msg.startswith("Unterminated string") or bool(_PARTIAL_TOKEN.fullmatch(text[e.pos :]))
    except (RecursionError, ValueError):
        return False
    return False


def warn_stderr(message: str) -> None:
    """The default warning of :func:`read_json_lines`: one line on standard error."""
    print(message, file=sys.stderr)


def read_json_lines(
    path: str | Path, *, key: str | None = None, warn: Callable[[str], None] | None = warn_stderr
) -> list[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON-lines file.

    A truncated *last* line, what a crash mid-write leaves, is skipped with one warning naming the
    file (``warn``; None: silently). Any other bad line (not UTF-8, not JSON, a truncated line
    followed by others) is a :class:`ReadError` naming the file and line.
    """
    data = read_bytes(path, key=key)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    lines = data.split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    out: list[tuple[int, Any]] = []
    for i, raw in enumerate(lines[: last + 1]):
        number = i + 1
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if i == last and e.end == len(raw) and e.reason == "unexpected end of data":
                text = raw[: e.start].decode("utf-8", errors="replace")  # cut inside a character
                if _truncated(text):
                    _warn_truncated(warn, path, number)
                    break
            byte = sum(len(x) + 1 for x in lines[:i]) + e.start
            raise ReadError(f"{where(path, number)}: not UTF-8 text (byte {byte}); save it as UTF-8") from None
        try:
            out.append((number, parse_json(text, path, number)))
        except ReadError:
            if i == last and _truncated(text):
                _warn_truncated(warn, path, number)
                break
            raise
    return out


def _warn_truncated(warn: Callable[[str], None] | None, path: str | Path, line: int) -> None:
    if warn is not None:
        warn(f"warning: {where(path, line)}: the last line is cut off (an interrupted write); left out")


def read_csv(path: str | Path, *, key: str | None = None) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, row)`` of every data row of a CSV file (UTF-8).

    Blank lines are skipped; a row with fewer fields than the header has ``None`` for the missing
    ones. A malformed file is a :class:`ReadError` naming the file and line.
    """
    text = read_text(path, key=key)
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] = []
    start = 1  # the line a record starts on (a quoted field may span lines)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ReadError(f"{where(path, start)}: not valid CSV: {e}") from None
        line, start = start, reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue
        if not header:
            header = [f.strip() for f in fields]
            continue
        rows.append((line, dict(zip(header, fields, strict=False))))
    return header, rows


def check_type(value: Any, kind: str) -> bool:
    """Whether ``value`` is of ``kind``: ``int`` (not bool), ``number`` (int or float, not bool),
    ``str``, ``list`` or ``dict``."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


__all__ = [
    "ReadError",
    "check_type",
    "decode",
    "parse_json",
    "parse_toml",
    "read_bytes",
    "read_csv",
    "read_json",
    "read_json_lines",
    "read_text",
    "read_toml",
    "short",
    "warn_stderr",
    "where",
]
