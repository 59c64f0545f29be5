"""Settings of a node program from flags and environment variables, clap style, and the value
parsers ic-gateway and ic-boundary share.

Like a Rust program's `#[clap(env, long)]`, every setting `some_flag` is the flag `--some-flag`
and the variable `SOME_FLAG`: the flag wins over the variable, the variable over the default,
and an empty variable counts as unset. Unknown variables are ignored (the orchestrator passes
the IC's whole env file). A bad or missing value ends the program with argparse's exit code 2
and a message naming the setting, in one of two styles a program chooses: `name_as_given`
(`--ic-url`, `IC_URL (environment)`, `--ic-url / IC_URL`) or `name_both` (`--ic-url (IC_URL)`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, TypeVar

T = TypeVar("T")
C = TypeVar("C")

Origin = Literal["flag", "environment", "default"]
Naming = Callable[[str, Origin], str]
"""How a program names setting `dest` whose value came from `origin`, in error messages."""

LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical")
_LOG_LEVEL_NAMES = {"trace": "debug", "warn": "warning"}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A value a program cannot use; the message says why (the caller adds where it came from)."""


class Setting(NamedTuple):
    """One setting: its default (None: no default) and its help text."""

    default: str | None
    help: str


def flag(dest: str) -> str:
    """The flag of setting `dest`: `--some-flag`."""
    return f"--{dest.replace('_', '-')}"


def variable(dest: str) -> str:
    """The environment variable of setting `dest`: `SOME_FLAG`."""
    return dest.upper()


def name_as_given(dest: str, origin: Origin) -> str:
    """`--some-flag` or `SOME_FLAG (environment)` as given; `--some-flag / SOME_FLAG` else."""
    if origin == "flag":
        return flag(dest)
    if origin == "environment":
        return f"{variable(dest)} (environment)"
    return f"{flag(dest)} / {variable(dest)}"


def name_both(dest: str, origin: Origin) -> str:
    """`--some-flag (SOME_FLAG)`, wherever the value came from."""
    return f"{flag(dest)} ({variable(dest)})"


class Values:
    """The raw value of every setting and where it came from, for a program to parse."""

    def __init__(self, values: Mapping[str, tuple[str | None, Origin]], naming: Naming) -> None:
        self._values = values
        self._naming = naming

    def raw(self, dest: str) -> str | None:
        """The value as given (None when neither given nor defaulted)."""
        return self._values[dest][0]

    def name(self, dest: str) -> str:
        """How messages name the setting, as the program's `Naming` says."""
        return self._naming(dest, self._values[dest][1])

    def get(self, dest: str, parse: Callable[[str], T]) -> T:
        """The value parsed by `parse` (stripped first); a ConfigError naming the setting if it
        is missing or blank, or if `parse` raises ValueError."""
        value = self.raw(dest)
        if value is None or not value.strip():
            raise ConfigError(f"{self.name(dest)} is required")
        try:
            return parse(value.strip())
        except ValueError as exc:
            raise ConfigError(f"{self.name(dest)}: {exc}") from None

    def optional(self, dest: str, parse: Callable[[str], T]) -> T | None:
        """Like `get`, but None when the setting is neither given nor defaulted."""
        return None if self.raw(dest) is None else self.get(dest, parse)


def load_settings(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    prog: str,
    description: str,
    settings: Mapping[str, Setting],
    naming: Naming,
    build: Callable[[Values], C],
) -> C:
    """Parse `argv` with a flag per setting, resolve flag > variable > default and `build` the
    configuration; a ConfigError from `build` exits 2 (argparse's error) with its message."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for dest, setting in settings.items():
        shown = f" (default {setting.default})" if setting.default is not None else ""
        parser.add_argument(
            flag(dest), dest=dest, metavar=variable(dest), help=setting.help + shown
        )
    args = vars(parser.parse_args(argv))
    values: dict[str, tuple[str | None, Origin]] = {}
    for dest, setting in settings.items():
        if args[dest] is not None:
            values[dest] = (args[dest], "flag")
        elif env.get(variable(dest)):
            values[dest] = (env[variable(dest)], "environment")
        else:
            values[dest] = (setting.default, "default")
    try:
        return build(Values(values, naming))
    except ConfigError as exc:
        parser.error(str(exc))


def parse_duration(value: str) -> float:
    """`25ms`, `1s`, `1.5s`, `2m`, `1h` or a bare number of seconds, in seconds; above zero."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise ConfigError(f"{value!r} is not a duration (examples: 25ms, 1s, 1.5s, 2m, 1h)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"{value!r}: the duration must be above zero")
    return seconds


def parse_log_level(value: str) -> str:
    """A Rust-style (`trace`, `warn`) or Python level name, as a Python level name."""
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return _LOG_LEVEL_NAMES.get(level, level)
