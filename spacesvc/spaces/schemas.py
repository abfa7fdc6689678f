"""The Spaces configuration's marshmallow schemas: what clients may send (validated) and what they
get back (documented).

No error message here quotes the submitted value, so a secret can never be echoed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

import backends
from spacesvc.http.schemas import ErrorSchema
from spacesvc.settings import ascii_number
from spacesvc.spaces.model import DEFAULT_REGION

MAX_BUCKETS = 100
MAX_SECRET_LENGTH = 256

ACCESS_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# What the S3 signer accepts as a region too (botocore refuses all digits and a trailing '-').
REGION = re.compile(r"^(?![0-9]+$)[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
# The same rule (with maxLength 32, and either case) without a lookahead, for the OpenAPI document:
# a letter alone; or letter-led; or digit-led and ending in a letter; or digit-led with a letter or
# '-' inside and ending in a letter or digit.
REGION_DOCUMENTED = (
    "^(?:[a-zA-Z]|[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]|[0-9][a-zA-Z0-9-]*[a-zA-Z]|[0-9]+[a-zA-Z-][a-zA-Z0-9-]*[a-zA-Z0-9])$"
)
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

READONLY_FIELDS = (
    "id",
    "hasSecretKey",
    "secretBackend",
    "version",
    "createdAt",
    "updatedAt",
    "updatedBy",
    "enabledEnvironments",
)


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name, or None."""
    if not 3 <= len(name) <= 63:
        return "Bucket names are 3 to 63 characters long."
    if not BUCKET.match(name):
        return "Bucket names use only a-z, 0-9, '.' and '-', and start and end with a letter or digit."
    if ".." in name:
        return "Bucket names may not contain '..'."
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "Bucket names may not be formatted as an IPv4 address."
    if name.startswith("xn--"):
        return "Bucket names may not start with 'xn--'."
    if name.endswith("-s3alias"):
        return "Bucket names may not end with '-s3alias'."
    return None


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "The endpoint's IPv6 address is not valid."
        return None
    if len(host) > 253 or not all(HOST_LABEL.match(label) for label in host.rstrip(".").split(".")):
        return "The endpoint's host name is not valid."
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is neither a host[:port] nor an absolute http(s) URL, or None."""
    if not endpoint or len(endpoint) > 2048 or any(c.isspace() for c in endpoint) or not endpoint.isprintable():
        return "The endpoint must be a host name or an http(s) URL without spaces."
    if "://" in endpoint:
        scheme, _, rest = endpoint.partition("://")
        if scheme.lower() not in ("http", "https"):
            return "The endpoint URL must use http or https."
        if "?" in rest or "#" in rest:
            return "The endpoint URL may not have a query or a fragment."
        authority = rest.split("/", 1)[0]
    else:
        if any(c in endpoint for c in "/?#"):
            return "A bare endpoint is a host with an optional :port; use an http(s) URL for anything more."
        authority = endpoint
    if "@" in authority:
        return "The endpoint may not contain user information (user:password@)."
    host, port = authority, None
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return "The endpoint's host is not valid."
            port = rest[1:]
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    if not host:
        return "The endpoint has no host."
    if port is not None and not (ascii_number(port) and 1 <= int(port) <= 65535):
        return "The endpoint's port must be a number from 1 to 65535."
    return _host_problem(host)


class LowercaseString(fields.String):
    """A string compared and stored lowercase (``FRA1`` is ``fra1``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs)).lower()


class SpacesConfigInput(Schema):
    """The writable fields of PUT (full) and PATCH (partial)."""

    class Meta:
        unknown = RAISE

    accessKey = fields.String(
        required=True,
        metadata={"description": "1-128 printable ASCII characters, no whitespace", "example": "DO00EXAMPLE"},
        validate=validate.Regexp(ACCESS_KEY, error="Must be 1 to 128 printable ASCII characters without whitespace."),
    )
    secretKey = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        metadata={
            "description": "write-only; required on creation unless the backend is env; "
            "omitted or empty keeps the stored one",
            "writeOnly": True,
        },
        validate=validate.Length(max=MAX_SECRET_LENGTH, error=f"Must be at most {MAX_SECRET_LENGTH} characters."),
    )
    region = LowercaseString(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "default fra1; case-insensitive, stored lowercase",
            "example": DEFAULT_REGION,
            "pattern": REGION_DOCUMENTED,
            "maxLength": 32,
        },
        validate=validate.Regexp(
            REGION,
            error="Must be 1 to 32 letters, digits or '-', starting and ending with a letter or digit, "
            "and not only digits.",
        ),
    )
    endpoint = fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "a host (optional :port) or an http(s) URL; default {region}.digitaloceanspaces.com",
            "example": "fra1.digitaloceanspaces.com",
        },
    )
    buckets = fields.List(
        fields.String(),
        load_default=None,
        allow_none=True,
        metadata={"description": f"at most {MAX_BUCKETS} distinct S3 bucket names", "example": ["backups"]},
    )

    @validates("endpoint")
    def _endpoint(self, value: str | None, **_: Any) -> None:
        problem = endpoint_problem(value) if value is not None else None
        if problem:
            raise ValidationError(problem)

    @validates("buckets")
    def _buckets(self, value: list[str] | None, **_: Any) -> None:
        if value is None:
            return
        if len(value) > MAX_BUCKETS:
            raise ValidationError(f"At most {MAX_BUCKETS} buckets may be configured.")
        errors: dict[int, list[str]] = {}
        seen: set[str] = set()
        for index, name in enumerate(value):
            problem = bucket_name_problem(name)
            if problem is None and name in seen:
                problem = "Duplicate bucket name."
            seen.add(name)
            if problem:
                errors[index] = [problem]
        if errors:
            raise ValidationError(errors)


class SpacesConfigPatchInput(SpacesConfigInput):
    """PATCH's fields: a JSON Merge Patch, where null resets a field to its default; accessKey
    (required) and secretKey (removed only with the whole configuration) cannot be null."""

    accessKey = fields.String(
        metadata={"description": "1-128 printable ASCII characters, no whitespace", "example": "DO00EXAMPLE"},
        validate=validate.Regexp(ACCESS_KEY, error="Must be 1 to 128 printable ASCII characters without whitespace."),
    )
    secretKey = fields.String(
        load_only=True,
        metadata={"description": "write-only; omitted or empty keeps the stored one", "writeOnly": True},
        validate=validate.Length(max=MAX_SECRET_LENGTH, error=f"Must be at most {MAX_SECRET_LENGTH} characters."),
    )


class EnablementSchema(Schema):
    id = fields.String(required=True)
    environmentId = fields.String(required=True)
    enabled = fields.Boolean(required=True)


class SpacesConfigSchema(Schema):
    id = fields.String(required=True, metadata={"readOnly": True})
    accessKey = fields.String(required=True)
    region = fields.String(required=True)
    endpoint = fields.String(required=True)
    buckets = fields.List(fields.String(), required=True)
    hasSecretKey = fields.Boolean(required=True, metadata={"readOnly": True})
    secretBackend = fields.String(required=True, metadata={"readOnly": True, "enum": list(backends.names())})
    version = fields.Integer(required=True, metadata={"readOnly": True})
    createdAt = fields.String(required=True, metadata={"readOnly": True, "format": "date-time"})
    updatedAt = fields.String(required=True, metadata={"readOnly": True, "format": "date-time"})
    updatedBy = fields.String(required=True, metadata={"readOnly": True})
    enabledEnvironments = fields.List(
        fields.Nested(EnablementSchema),
        required=True,
        metadata={"readOnly": True, "description": "BRIDGEPORT's enablement per environment"},
    )


class SpacesStatusSchema(Schema):
    configured = fields.Boolean(required=True)
    config = fields.Nested(SpacesConfigSchema, allow_none=True, required=True)


class SpacesConfigEnvelopeSchema(Schema):
    config = fields.Nested(SpacesConfigSchema, required=True)


class BucketFailureSchema(Schema):
    bucket = fields.String(required=True)
    reason = fields.String(required=True)


class ConnectionTestSchema(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    buckets = fields.List(fields.String(), required=True, metadata={"description": "buckets that answered"})
    failedBuckets = fields.List(fields.String(), required=True)
    failures = fields.List(
        fields.Nested(BucketFailureSchema), required=True, metadata={"description": "why each failed"}
    )
    scopedKey = fields.Boolean(
        required=True,
        metadata={
            "description": "the buckets were checked one by one, or ListBuckets was denied (a bucket-scoped key)"
        },
    )
    hint = fields.String()


class ConnectionTestFailureSchema(ErrorSchema):
    """A failed test (400): the error envelope, plus what BRIDGEPORT's page reads (``error``, the
    same words as ``message``)."""

    success = fields.Boolean(required=True, metadata={"enum": [False]})
    error = fields.String(required=True)
    buckets = fields.List(fields.String())
    failedBuckets = fields.List(fields.String())
    failures = fields.List(fields.Nested(BucketFailureSchema))
    scopedKey = fields.Boolean()


class BucketListSchema(Schema):
    buckets = fields.List(fields.String(), required=True)
    source = fields.String(required=True, metadata={"enum": ["configured", "discovered"]})
    scopedKey = fields.Boolean(metadata={"description": "present when ListBuckets was denied"})
    hint = fields.String()
