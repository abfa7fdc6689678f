"""Request bodies → validated configuration fields, or one ApiError naming every failing field."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from spacesvc.http.errors import ApiError, readonly_field, validation_error
from spacesvc.spaces.model import DEFAULT_REGION, SpacesFields, SpacesInput, SpacesPatch
from spacesvc.spaces.schemas import READONLY_FIELDS, SpacesConfigInput, SpacesConfigPatchInput

READONLY_HINTS = {
    "id": "The id is assigned by the server.",
    "hasSecretKey": "Send secretKey to set the secret; it is never returned.",
    "secretBackend": "The backend is chosen by the service's SPACESVC_SECRET_BACKEND setting.",
    "version": "The version is assigned by the server; use If-Match to make a write conditional on it.",
    "createdAt": "Timestamps are assigned by the server.",
    "updatedAt": "Timestamps are assigned by the server.",
    "updatedBy": "updatedBy is the name of the token that made the change.",
    "enabledEnvironments": "Enable an environment with PUT /api/settings/spaces/environments/{environmentId}.",
}

_PUT_SCHEMA = SpacesConfigInput()
_PATCH_SCHEMA = SpacesConfigPatchInput(partial=True)


def parse_put(body: dict[str, Any]) -> SpacesInput:
    data = _load(body, "PUT", _PUT_SCHEMA)
    return SpacesInput(
        SpacesFields(
            access_key=data["accessKey"],
            region=data["region"] or DEFAULT_REGION,
            endpoint=data["endpoint"],
            buckets=tuple(data["buckets"] or ()),
        ),
        _secret(data.get("secretKey")),
    )


def parse_patch(body: dict[str, Any]) -> SpacesPatch:
    if "accessKey" in body and body["accessKey"] is None:
        raise _field_errors({"accessKey": ["accessKey is required and cannot be removed."]})
    if "secretKey" in body and body["secretKey"] is None:
        raise _field_errors(
            {"secretKey": ["secretKey cannot be removed; DELETE /api/settings/spaces removes the whole configuration."]}
        )
    data = _load(body, "PATCH", _PATCH_SCHEMA)
    changes = {name: data[name] for name in body if name != "secretKey"}
    return SpacesPatch(changes, _secret(data.get("secretKey")))


def _secret(value: str | None) -> str | None:
    return value or None


def _load(body: dict[str, Any], method: str, schema: SpacesConfigInput) -> dict[str, Any]:
    for name in body:
        if name in READONLY_FIELDS:
            raise readonly_field(name, method, READONLY_HINTS[name])
    try:
        return schema.load(body)
    except ValidationError as error:
        raise _field_errors(_flatten(error.messages), order=list(body)) from None


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages → {"buckets.1": [...]} (dot paths)."""
    if isinstance(messages, list):
        return {prefix or "body": [str(m) for m in messages]}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        path = str(key) if key != "_schema" else ""
        path = f"{prefix}.{path}" if prefix and path else (path or prefix)
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat.setdefault(path or "body", []).extend(str(m) for m in value)
    return flat


def _field_errors(errors: dict[str, list[str]], order: list[str] | None = None) -> ApiError:
    """One VALIDATION_ERROR: ``field`` is the first failing field in the body's order."""
    position = {name: i for i, name in enumerate(order or [])}

    def sort_key(path: str) -> tuple[int, list[int | str]]:
        head, *rest = path.split(".")
        return position.get(head, len(position)), [int(p) if p.isdigit() else p for p in rest]

    ordered = dict(sorted(errors.items(), key=lambda item: sort_key(item[0])))
    first, messages = next(iter(ordered.items()))
    unknown = messages == ["Unknown field."]
    message = f'Unknown field "{first}".' if unknown else f'Invalid value for "{first}": {messages[0]}'
    hint = "Writable fields are accessKey, secretKey, region, endpoint and buckets." if unknown else None
    return validation_error(message, field=first, hint=hint, errors=ordered)
