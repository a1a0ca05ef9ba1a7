"""Pydantic models made from the application door's attrs records: the MCP tools' output schemas.

The SDK derives a tool's output schema from its return annotation, and it speaks pydantic; the records
live in `capsule.api` as attrs classes. Rather than restate every field, `model_of` builds the model
from the record (nested records, tuples as lists, optionals), with each field's `doc` metadata as its
description, so a field added to a record reaches the MCP schema by itself.
"""

from __future__ import annotations

import functools
import types
import typing
from pathlib import Path
from typing import Any

import attrs
from pydantic import BaseModel, ConfigDict, Field, create_model


def _convert(hint: Any) -> Any:
    """A record's type hint with records replaced by their models and tuples by lists."""
    if attrs.has(hint):
        return model_of(hint)
    if hint is Path:
        return str  # JSON Schema has no "path" format: clients warn about it
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return list[_convert(item)]  # type: ignore[misc]  # built at run time for pydantic
    if origin is dict:
        return dict[_convert(args[0]), _convert(args[1])]  # type: ignore[misc]
    if origin is list:
        return list[_convert(args[0])]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        converted = tuple(_convert(a) for a in args)
        return functools.reduce(lambda a, b: a | b, converted)
    return hint


@functools.cache
def model_of(cls: Any) -> type[BaseModel]:
    """The pydantic model of an attrs record (cached: one model per record class)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        doc = field.metadata.get("doc")
        fields[field.name] = (_convert(hints[field.name]), Field(description=doc) if doc else ...)
    model: type[BaseModel] = create_model(cls.__name__, __config__=ConfigDict(from_attributes=True), **fields)
    model.__doc__ = cls.__doc__
    return model


def listing(name: str, key: str, item: Any, description: str) -> type[BaseModel]:
    """A model `{key: [item, ...]}` (MCP structured output is an object, never a bare list)."""
    items: Any = list[model_of(item)]  # type: ignore[misc]  # a type built at run time for pydantic
    fields: dict[str, Any] = {key: (items, Field(description=description))}
    return create_model(name, **fields)
