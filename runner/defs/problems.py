"""One line for each pydantic error in a task file or the config: the key path, what
was wanted, "did you mean" for an unknown key, and the value only where it may be shown.

Shared by the task-file and config loaders, so both word the same mistake the same way.
"""

from __future__ import annotations

import difflib
import types
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel

from runner.core.redaction import MIN_SECRET_LENGTH

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (a typo, a wrong case), or ``None``."""
    options = list(choices)
    lowered = {choice.lower(): choice for choice in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return found[0] if found else None


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None`` (or ``Optional``), else the annotation."""
    if get_origin(annotation) in {Union, types.UnionType}:
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The keys the mapping at ``loc`` (inside ``model``) may hold, or ``None`` when it
    is not a model's (a free mapping, or a path the models do not know)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif origin is dict:
            current = get_args(current)[1]
        elif origin in {list, tuple}:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def unknown_key(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """The message for an unknown key at ``loc``: the likely intended key, else the
    keys allowed there."""
    allowed = keys_at(model, loc[:-1]) or []
    key = loc[-1] if loc else ""
    guess = did_you_mean(str(key), allowed) if allowed else None
    if guess is not None:
        return f"unknown key; did you mean `{guess}`?"
    if allowed:
        return f"unknown key; allowed keys: {', '.join(allowed)}"
    return "unknown key"


def _strings(value: Any) -> list[str]:
    """Every string value inside ``value`` (not the keys: those are the config's own
    names) long enough to be a secret, longest first."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return sorted({s for s in found if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "true/false", int: "a number", float: "a number"}
    names |= {dict: "a mapping", list: "a list", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


def message(model: type[BaseModel], err: Any, *, show_value: bool) -> str:
    """One pydantic error as a message (without its location). With ``show_value``
    (task files: nothing secret) a short form of the wrong value is added; without it
    (the config, where a value may be an expanded secret) no value ever appears, not
    even inside a validator's own wording."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return unknown_key(model, tuple(err["loc"]))
    if kind == "missing":
        return "required key is missing"
    text = str(err["msg"]).removeprefix("Value error, ")
    if show_value:
        if kind not in {"value_error", "task_shape", "schedule"} and "input" in err:
            text += f" (got {_short(err['input'])})"
        return text
    for value in _strings(err.get("input")):
        text = text.replace(repr(value), "(the value)").replace(value, "(the value)")
    if "input" in err and kind.endswith("_type"):
        text += f" (got {_kind(err['input'])})"
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
