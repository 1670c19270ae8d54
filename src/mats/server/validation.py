"""Validation errors that stay small: whatever a body holds, a 422's message lists at most
:data:`MAX_LISTED` fields (then "and N more"), and unknown keys are one entry naming a few.

A JSON object with 200,000 unknown keys would otherwise be answered with one error per key (pydantic
lists every key an ``extra="forbid"`` model refuses). The app also runs the parsing and validation in
a worker thread (:func:`starlette.concurrency.run_in_threadpool`), off the event loop.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

__all__ = ["MAX_LISTED", "field_errors", "validate"]

MAX_LISTED = 10  # field errors named in one answer
_NAMED_UNKNOWN = 3  # unknown keys named in their one entry
_MAX_NAME = 40  # characters of a key or message quoted back


def _short(text: str, limit: int = _MAX_NAME) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_errors(errors) -> str:
    """``loc: msg; loc: msg; ... and N more`` for pydantic/FastAPI error dicts (a list)."""
    errors = errors if isinstance(errors, (list, tuple)) else list(errors)
    parts = []
    for e in errors[:MAX_LISTED]:
        loc = [_short(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")]
        parts.append(f"{'.'.join(loc) or 'body'}: {_short(e.get('msg', 'invalid'), 200)}")
    if len(errors) > MAX_LISTED:
        parts.append(f"and {len(errors) - MAX_LISTED:,} more")
    return "; ".join(parts)


def _unknown_entry(unknown: list[str]) -> dict:
    if len(unknown) == 1:
        return {"loc": ("body", unknown[0]), "msg": "unknown field", "type": "extra_forbidden"}
    named = ", ".join(repr(_short(k)) for k in unknown[:_NAMED_UNKNOWN])
    more = f" and {len(unknown) - _NAMED_UNKNOWN:,} more" if len(unknown) > _NAMED_UNKNOWN else ""
    return {"loc": ("body",), "msg": f"{len(unknown):,} unknown fields: {named}{more}",
            "type": "extra_forbidden"}


def validate(model_cls: type[BaseModel], data: dict) -> BaseModel:
    """``model_cls`` validated from ``data``, or a :class:`RequestValidationError` in which unknown keys
    are one entry (they are taken out before pydantic sees the data, so it never lists them)."""
    unknown: list[str] = []
    if model_cls.model_config.get("extra") == "forbid":
        known = set(model_cls.model_fields)
        known |= {f.alias for f in model_cls.model_fields.values() if f.alias}
        unknown = [k for k in data if k not in known]
        if unknown:
            data = {k: v for k, v in data.items() if k in known}
    try:
        result = model_cls.model_validate(data)
        errors = []
    except ValidationError as e:
        result = None
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
    if unknown:
        errors.append(_unknown_entry(unknown))
    if errors:
        raise RequestValidationError(errors)
    return result
