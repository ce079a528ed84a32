"""
Typed, checked reading of one TOML table.

Every configuration section (a proxy, a policy, a cache) is read through a
`TableReader`, so every bad value is refused the same way: with a
`ConfigError` that names the full key (``forward[0].listen``) and says what
is wrong and what would be right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from multiproxy.pipeline._errors import ConfigError

T = TypeVar("T")

_MISSING: Any = object()


class TableReader:
    """
    Reads keys from one TOML table, checking types and ranges.

    Call `finish` when done: any key that was never read is a typo, and is
    refused with the list of keys that are allowed.
    """

    def __init__(self, table: object, where: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {_kind(table)}")
        self.table: dict[str, Any] = table
        self.where = where
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        """The full dotted name of ``name`` in this table, for messages."""
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, message: str) -> ConfigError:
        """A `ConfigError` about key ``name``."""
        return ConfigError(f"{self.key(name)}: {message}")

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        """The value as TOML gave it (``default`` if absent; required if no default)."""
        self._read.add(name)
        if name not in self.table:
            if default is _MISSING:
                raise self.error(name, "is required")
            return default
        return self.table[name]

    def _typed(self, name: str, default: Any, types: tuple[type, ...], what: str) -> Any:
        value = self.raw(name, default)
        if value is default and name not in self.table:
            return value
        if isinstance(value, bool) and bool not in types:
            raise self.error(name, f"expected {what}, got {_kind(value)} {value!r}")
        if not isinstance(value, types):
            raise self.error(name, f"expected {what}, got {_kind(value)} {value!r}")
        return value

    def string(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> str:
        value = self._typed(name, default, (str,), "a string")
        if choices and name in self.table and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        return self._typed(name, default, (bool,), "true or false")

    def integer(
        self, name: str, default: Any = _MISSING, minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._typed(name, default, (int,), "a whole number")
        if name in self.table:
            _check_range(self, name, value, minimum, maximum)
        return value

    def number(
        self, name: str, default: Any = _MISSING, minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A number of any kind (seconds, ratios); TOML ints are accepted."""
        value = self._typed(name, default, (int, float), "a number")
        if name in self.table:
            _check_range(self, name, value, minimum, maximum)
            value = float(value)
        return value

    def optional_number(self, name: str, minimum: float | None = None) -> float | None:
        """A number, or absent / 0 meaning "no limit" (returned as None)."""
        value = self.number(name, 0, minimum=0 if minimum is None else minimum)
        return value or None

    def strings(self, name: str, default: Any = _MISSING) -> list[str]:
        """A list of strings; a single string is taken as a list of one."""
        value = self.raw(name, default)
        if name not in self.table:
            return value
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, f"expected a list of strings, got {value!r}")
        return list(value)

    def table_of(self, name: str) -> TableReader:
        """A sub-table, read by its own `TableReader` (empty if absent)."""
        return TableReader(self.raw(name, {}), self.key(name))

    def tables(self, name: str) -> list[TableReader]:
        """An array of tables (``[[name]]``), each with its own reader."""
        value = self.raw(name, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise self.error(name, f"expected an array of tables, got {_kind(value)}")
        return [TableReader(v, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def convert(self, name: str, value: Any, parse: Callable[[Any], T]) -> T:
        """
        Run ``parse(value)``; any ValueError becomes a `ConfigError` naming
        the key, with the parser's own message.
        """
        try:
            return parse(value)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise self.error(name, str(e)) from None

    def finish(self) -> None:
        """Refuse keys that were never read: they are typos or unsupported."""
        unknown = sorted(set(self.table) - self._read)
        if unknown:
            allowed = ", ".join(sorted(self._read)) or "none"
            raise ConfigError(
                f"{self.key(unknown[0])}: unknown key (allowed here: {allowed})"
            )


def _check_range(reader: TableReader, name: str, value: float, minimum, maximum) -> None:
    if minimum is not None and value < minimum:
        raise reader.error(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise reader.error(name, f"must be at most {maximum}, got {value}")


def _kind(value: object) -> str:
    return {
        bool: "a boolean", int: "a number", float: "a number", str: "a string",
        list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)
