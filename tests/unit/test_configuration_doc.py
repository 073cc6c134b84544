"""docs/configuration.md has a row for every setting the code reads, with the code's default.

The settings are found in the code itself: every call of the env-reading helpers of
`messaging/settings.py` (`env_int(env, "NAME", default, ...)` and the like) and every
`env.get("NAME")` / `os.environ.get("NAME")` in the shared package, the three services and the
operator tools. A default is evaluated in its module (`_BROKER.host`, `DEFAULTS.port`), or read
from the `or` that follows a `get`; a default that is another setting (BATCH_SIZE defaults to
PREFETCH_COUNT) must be documented as that setting's name.
"""
from __future__ import annotations

import ast
import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from messaging.settings import env_duration

ROOT = Path(__file__).resolve().parents[2]
if "from mutmut." in (ROOT / "messaging" / "settings.py").read_text():
    # mutmut's copy of the code: every function is rewritten into trampolines and mutants, so the
    # settings cannot be read from it as written. The check runs on the code itself in the suite.
    pytest.skip("the code is mutmut's rewritten copy", allow_module_level=True)
DOC = ROOT / "docs" / "configuration.md"
PACKAGES = ("messaging", "order_service", "inventory_service", "notification_service", "ops")
SERVICES = {"order_service": "OrderService", "inventory_service": "InventoryService",
            "notification_service": "NotificationService"}
READERS = {"env_str", "env_int", "env_float", "env_choice", "env_duration"}
ENVIRONMENTS = {"env", "os.environ"}
NAME = re.compile(r"^[A-Z][A-Z0-9_]+$")
UNSET = "unset"
COMPUTED = "computed at run time"


@dataclass(frozen=True)
class Setting:
    """One environment variable the code reads, where, and the default it falls back to."""

    name: str
    service: str | None  # a service's own setting, or None when the shared code reads it
    reader: str  # the helper (env_int, ...) or "get"
    default: object  # the value, UNSET, COMPUTED, or ("setting", NAME)
    where: str


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _inside_fstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FormattedValue):
            return True
    return False


def _is_get(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "get":
        return ast.unparse(func.value) in ENVIRONMENTS
    return ast.unparse(func) == "os.getenv"


def _reader(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name if name in READERS else None


class Module:
    """One source file: its tree, and its namespace for evaluating defaults (imported on demand)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        self.tree = ast.parse(path.read_text())
        self.parents = _parents(self.tree)
        self._namespace: dict | None = None

    @property
    def namespace(self) -> dict:
        if self._namespace is None:
            self._namespace = vars(importlib.import_module(self.name))
        return self._namespace

    def constant(self, node: ast.AST) -> str | None:
        """The environment variable a name argument holds: a literal, or a module constant."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
        elif isinstance(node, ast.Name) and isinstance(self.namespace.get(node.id), str):
            value = self.namespace[node.id]
        else:
            return None
        return value if NAME.match(value) else None

    def evaluate(self, node: ast.AST | None) -> object:
        if node is None:
            return UNSET
        if isinstance(node, ast.Call) and _is_get(node):
            return UNSET  # the fallback is another variable, itself documented
        try:
            value = eval(compile(ast.Expression(node), str(self.path), "eval"), self.namespace)
        except NameError:
            other = self._setting_assigned_to(node)
            return ("setting", other) if other else COMPUTED
        return UNSET if value in (None, "") else value

    def _setting_assigned_to(self, node: ast.AST) -> str | None:
        """For a default that is a local variable: the setting it was read from, if any."""
        if not isinstance(node, ast.Name):
            return None
        for assign in ast.walk(self.tree):
            if (isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Call)
                    and _reader(assign.value) and len(assign.value.args) > 1
                    and any(isinstance(t, ast.Name) and t.id == node.id for t in assign.targets)):
                return self.constant(assign.value.args[1])
        return None

    def fallback_of(self, call: ast.Call) -> ast.AST | None:
        """What `env.get("X") or fallback` falls back to: the first operand after it that is not
        another variable; None when nothing follows."""
        if len(call.args) > 1:
            return call.args[1]
        parent = self.parents.get(call)
        if isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or):
            following = parent.values[parent.values.index(call) + 1:]
            for operand in following:
                if not (isinstance(operand, ast.Call) and _is_get(operand)):
                    return operand
            return following[-1] if following else None
        return None

    def settings(self) -> list[Setting]:
        found = []
        service = SERVICES.get(self.name.split(".")[0]) if self.name.endswith(".config") else None
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call) or _inside_fstring(node, self.parents):
                continue
            reader = _reader(node)
            if reader and len(node.args) >= 3 and (name := self.constant(node.args[1])):
                found.append(Setting(name, service, reader, self.evaluate(node.args[2]),
                                     f"{self.path.relative_to(ROOT)}:{node.lineno}"))
            elif _is_get(node) and node.args and (name := self.constant(node.args[0])):
                found.append(Setting(name, service, "get", self.evaluate(self.fallback_of(node)),
                                     f"{self.path.relative_to(ROOT)}:{node.lineno}"))
        return found


def settings_in_code() -> list[Setting]:
    """Every environment variable the services, the shared package and the operator tools read."""
    return [setting for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for setting in Module(path).settings()]


@dataclass(frozen=True)
class Row:
    name: str
    default: str
    service: str


def _cell_value(cell: str) -> str:
    """The default as written: the text of its first `code` span, else the cell's text."""
    match = re.match(r"`([^`]*)`", cell.strip())
    return match.group(1) if match else cell.strip()


def rows_in_doc(text: str) -> list[Row]:
    """The rows of the settings table: | `NAME` | default | service | meaning |."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`[A-Z][A-Z0-9_]+`", cells[0]):
            rows.append(Row(cells[0].strip("`"), _cell_value(cells[1]), cells[2]))
    return rows


def documents(row: Row, setting: Setting) -> bool:
    """Whether the row's default is the one the code falls back to."""
    default, written = setting.default, row.default
    if default == UNSET:
        return written == UNSET
    if default == COMPUTED:
        return written != UNSET and bool(written)
    if isinstance(default, tuple):
        return written == default[1]
    if setting.reader == "env_duration":
        return math.isclose(env_duration({"X": written}, "X", -1.0, 0.0, math.inf), default)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return math.isclose(float(written.replace(",", "")), float(default))
        except ValueError:
            return False
    if setting.reader == "env_choice":
        return written.upper() == str(default).upper()
    return written == str(default)


def rows_for(rows: list[Row], setting: Setting) -> list[Row]:
    """The rows that document `setting`: its service's row, or every row of a shared setting."""
    named = [row for row in rows if row.name == setting.name]
    if setting.service is None:
        return named
    return [row for row in named if setting.service in row.service or row.service == "all"]


def test_the_code_is_searched_for_settings_in_every_way_it_reads_them():
    found = settings_in_code()
    assert len({s.name for s in found}) >= 30
    assert {s.reader for s in found} == READERS | {"get"}
    assert {s.service for s in found} == set(SERVICES.values()) | {None}
    kinds = {type(s.default) for s in found} | {s.default for s in found if isinstance(s.default, str)}
    assert {tuple, int, float, UNSET, COMPUTED} <= kinds


def test_every_setting_the_code_reads_has_a_row_with_its_default():
    rows = rows_in_doc(DOC.read_text())
    problems = []
    for setting in settings_in_code():
        candidates = rows_for(rows, setting)
        if not candidates:
            problems.append(f"{setting.name} ({setting.service or 'shared'}, read at {setting.where})"
                            " has no row in docs/configuration.md")
        problems += [f"{setting.name}: documented default {row.default!r} for {row.service}, but"
                     f" {setting.where} falls back to {setting.default!r}"
                     for row in candidates if not documents(row, setting)]
    assert not problems, "\n".join(problems)


def test_every_row_names_a_setting_the_code_reads():
    read = {setting.name for setting in settings_in_code()}
    assert [row.name for row in rows_in_doc(DOC.read_text()) if row.name not in read] == []


def test_the_doc_has_one_settings_table():
    text = DOC.read_text()
    headers = [line for line in text.splitlines() if re.match(r"\|\s*variable\s*\|", line)]
    assert headers == ["| variable | default | service | meaning |"]


@pytest.mark.parametrize("cell, reader, default, expected", [
    ("30", "env_int", 30, True),
    ("31", "env_int", 30, False),
    ("100,000", "env_int", 100_000, True),
    ("7d", "env_duration", 7 * 86400.0, True),
    ("6d", "env_duration", 7 * 86400.0, False),
    ("normal", "env_choice", "NORMAL", True),
    ("localhost", "env_str", "localhost", True),
    ("Localhost", "env_str", "localhost", False),
    ("unset", "get", UNSET, True),
    ("", "get", UNSET, False),
    ("PREFETCH_COUNT", "env_int", ("setting", "PREFETCH_COUNT"), True),
    ("100", "env_int", ("setting", "PREFETCH_COUNT"), False),
    ("the service's name", "get", COMPUTED, True),
    ("unset", "get", COMPUTED, False),
])
def test_a_documented_default_is_compared_as_the_code_reads_it(cell, reader, default, expected):
    assert documents(Row("X", cell, "all"), Setting("X", None, reader, default, "here")) is expected
