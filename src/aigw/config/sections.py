"""Sections left empty in the YAML (every key commented out, so null) read as their defaults.

``tenancy:`` with nothing under it is ``None`` to YAML; it failed as "Input should be a valid dictionary",
while ``server:`` alone was taken as its defaults. A *section* is a field whose default is a mapping, list or
model and which does not take ``None`` (where ``None`` means something, as ``cache:`` = no cache, it stays).
A single setting left empty (``port:``) stays an error.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel

from aigw.config.explain import model_in, options


def fill_empty_sections(data: Any, node: Any) -> Any:
    """``data`` (the raw config below the type ``node``) with its empty sections made empty mappings or lists."""
    model = model_in(node)
    if model is not None and isinstance(data, dict):
        return {k: _field(model, k, v) for k, v in data.items()}
    for arg in options(node):
        origin = get_origin(arg)
        if origin is dict and isinstance(data, dict):
            value_type = get_args(arg)[1]
            return {k: fill_empty_sections({} if v is None and _is_section(value_type) else v, value_type)
                    for k, v in data.items()}
        if origin is list and isinstance(data, list):
            return [fill_empty_sections(v, get_args(arg)[0]) for v in data]
    return data


def _field(model: type[BaseModel], key: str, value: Any) -> Any:
    field = model.model_fields.get(key)
    if field is None:  # an unknown key: validation names it
        return value
    if value is None and field.default_factory is not None and _is_section(field.annotation):
        return {} if model_in(field.annotation) is not None or _origin_is(field.annotation, dict) else []
    return fill_empty_sections(value, field.annotation)


def _is_section(annotation: Any) -> bool:
    kinds = options(annotation)
    return type(None) not in kinds and (model_in(annotation) is not None or _origin_is(annotation, dict)
                                        or _origin_is(annotation, list))


def _origin_is(annotation: Any, kind: type) -> bool:
    return any(get_origin(a) is kind for a in options(annotation))
