"""
The process-wide memo tables (`multiproxy._memo`): bounded, cleared by one
call, and made nowhere else.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from multiproxy import _memo as memo
from multiproxy.cache._keys import cache_key
from multiproxy.http1._parser import RequestReader

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "multiproxy"


def test_a_full_table_empties_before_it_takes_more() -> None:
    table = memo.Table("test.table", 3)
    for i in range(3):
        table.remember(i, str(i))
    assert len(table) == 3 and table.get(1) == "1"
    assert table.remember(9, "9") == "9"
    assert dict(table) == {9: "9"}


def test_a_full_members_set_empties_before_it_takes_more() -> None:
    valid = memo.Members("test.members", 2)
    valid.remember(b"a")
    valid.remember(b"b")
    valid.remember(b"c")
    assert valid == {b"c"}


def test_one_name_one_table() -> None:
    with pytest.raises(ValueError, match="http1.line-pairs"):
        memo.table("http1.line-pairs", 10)
    with pytest.raises(ValueError, match="cache.cache-key"):
        memo.cached("cache.cache-key", 10)(len)


def test_clear_empties_every_table_and_cache() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n")
    reader.next_event()
    cache_key(b"http://example.com/")
    filled = memo.sizes()
    assert filled["http1.line-pairs"][0] > 0 and filled["http1.valid-hosts"][0] > 0
    assert filled["cache.cache-key"][0] > 0
    assert all(entries <= limit for entries, limit in filled.values())
    memo.clear()
    assert all(entries == 0 for entries, _ in memo.sizes().values())


def _module_level_memos(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "lru_cache" for alias in node.names):
                found.append(f"{path.name}:{node.lineno} imports lru_cache")
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        empty = (isinstance(value, ast.Dict) and not value.keys) or (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("dict", "set") and not value.args)
        if empty:
            found.append(f"{path.name}:{node.lineno} starts an empty module-level dict or set")
    return found


# Module-level state that is not a memo: the signal handlers installed.
NOT_MEMOS = {"_signals.py:27", "_signals.py:28"}


def test_no_process_wide_memo_is_made_outside_the_memo_module() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name != "_memo.py":
            offenders += _module_level_memos(path)
    assert [o for o in offenders if o.split(" ")[0] not in NOT_MEMOS] == []
