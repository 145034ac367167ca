"""What recipes and tasks declare about themselves: parameter fields (with their flags) and extra columns.

A recipe's Params dataclass and a task's Options dataclass declare each field
with ``param(...)``, so that the script's flags, their help, bounds and
defaults, and the resume key all derive from that one definition
(``by_flag`` and ``spread`` route flag values to every owner of a field;
``resolved`` is what the resume key and model cache hash, files by content). A recipe or
task declares the extra columns its rows carry with ``Column``; the report
shows them without knowing who declared them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Column:
    """An extra column of a study's rows, declared by the recipe (or task) that fills it.

    Attributes:
      key: the row field (in results.json and results.csv) that holds the value.
      header: the table's column header.
      spec: a format spec for numbers ('.3f'); booleans show as yes/no.
      scale: the value is multiplied by this before formatting (1/1024 for KB).
      note: a line for report.md's "how to read it", shown when a row has the column.
    """

    key: str
    header: str
    spec: str = ""
    scale: float = 1.0
    note: str = ""

    def format(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (int, float)) and self.scale != 1.0:
            value = value * self.scale
        return f"{value:{self.spec}}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Column:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def param(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] = (),
          bounds: tuple[float | None, float | None] = (None, None), path: bool = False) -> Any:  # fmt: skip
    """A field of a recipe's Params (or a task's Options) dataclass, with what its flag needs.

    Args:
      default: the field's default, which is also its flag's default.
      help: the flag's help text.
      flag: the flag's name when it is not the field's (lora's ``rank`` is ``--lora_rank``).
      choices: the allowed strings (an enum flag).
      bounds: (lower, upper) bounds of a number flag, checked before any work starts.
      path: the value is a file path: the resume key and the model cache hash the file's content, not its name.
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices), "bounds": bounds, "path": path}
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The command-line flag of a field: its declared flag name, else the field's name."""
    return field.metadata.get("flag") or field.name


def is_path(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("path"))


def by_flag(owners: Iterable[tuple[str, type | None]]) -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Flag name -> [(owner name, field)] for the fields of each owner's dataclass (None: it has none)."""
    flags: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for owner, cls in owners:
        for field in dataclasses.fields(cls) if cls else ():
            flags.setdefault(flag_name(field), []).append((owner, field))
    return flags


def spread(flags: Mapping[str, list[tuple[str, dataclasses.Field]]], values: Mapping[str, Any]) -> dict[str, dict]:
    """Flag-named values -> {owner: {field: value}} for every owner that declares each flag (see ``by_flag``).

    A value equal to a field's default (or None) is left out. Raises KeyError
    for a name no owner declares.
    """
    spread_values: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        for owner, field in flags[name]:
            if value is not None and value != field.default:
                spread_values.setdefault(owner, {})[field.name] = value
    return spread_values


def content_hash(path: str) -> str:
    """A digest of a file's bytes, or of a folder's file names and bytes (sorted); '' if it does not exist."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode() + b"\0")
                _update_file(digest, full)
    elif os.path.isfile(path):
        _update_file(digest, path)
    else:
        return ""
    return digest.hexdigest()


def _update_file(digest, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def resolved(params: Any) -> dict[str, Any]:
    """A Params or Options instance as a dict, with each path field's file replaced by its content hash."""
    if params is None:
        return {}
    values = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        values[field.name] = {"path": value, "sha256": content_hash(value)} if is_path(field) and value else value
    return values
