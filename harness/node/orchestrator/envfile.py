"""Environment files (`KEY=VALUE` lines) as the IC ships for ic-gateway and ic-boundary.

Format (a strict subset of systemd's `EnvironmentFile=`): blank lines and lines starting with
`#` or `;` are ignored; every other line is `KEY=VALUE` with `KEY` a shell variable name.
`VALUE` is either unquoted (surrounding whitespace stripped, taken literally), in single
quotes (literal) or in double quotes (where `\\"`, `\\\\`, `\\n`, `\\t` and `\\$` are escapes).
Anything else is an `EnvFileError` naming the file, the line number and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "$": "$"}


class EnvFileError(ValueError):
    """An environment file that cannot be read or does not follow the format."""


def parse_env_text(text: str, source: str = "<env>") -> dict[str, str]:
    """Parse the content of an environment file; `source` names it in errors."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        where = f"{source}:{number}"
        if not sep:
            raise EnvFileError(f"{where}: expected KEY=VALUE, got {raw!r}")
        if not _KEY.fullmatch(key):
            raise EnvFileError(
                f"{where}: {key!r} is not a valid variable name "
                f"(letters, digits and _, not starting with a digit)"
            )
        result[key] = _value(value.strip(), where)
    return result


def _value(text: str, where: str) -> str:
    if not text or text[0] not in "\"'":
        return text
    quote = text[0]
    if len(text) < 2 or text[-1] != quote:
        raise EnvFileError(f"{where}: unterminated {quote} quote in value {text!r}")
    body = text[1:-1]
    if quote == "'":
        if "'" in body:
            raise EnvFileError(f"{where}: stray ' inside a single-quoted value {text!r}")
        return body
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == '"':
            raise EnvFileError(f'{where}: unescaped " inside a double-quoted value {text!r}')
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, None)
        if escaped is None or escaped not in _ESCAPES:
            raise EnvFileError(
                f"{where}: unknown escape \\{escaped or ''} in value {text!r} "
                f'(known: \\", \\\\, \\n, \\t, \\$)'
            )
        out.append(_ESCAPES[escaped])
    return "".join(out)


def read_env_file(path: Path) -> dict[str, str]:
    """Read and parse an environment file; raise `EnvFileError` for any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read environment file {path}: {exc}") from None
    return parse_env_text(text, str(path))
