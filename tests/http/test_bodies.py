"""Request bodies loaded by the schemas that document them (``spacesvc.http.schemas.load_body``):
the enablement and environment bodies, answered with the envelope their routes have always used."""

from __future__ import annotations

from typing import Any

import pytest

from spacesvc.environments.views import ENVIRONMENT_INPUT, invalid_environment
from spacesvc.http.errors import ApiError, ErrorCode
from spacesvc.http.schemas import load_body
from spacesvc.spaces.enablement import ENABLEMENT_INPUT, invalid_enablement

pytestmark = pytest.mark.unit


def refused(schema: Any, body: dict[str, Any], invalid: Any) -> ApiError:
    with pytest.raises(ApiError) as error:
        load_body(schema, body, invalid)
    assert error.value.code is ErrorCode.VALIDATION_ERROR and error.value.status == 400
    return error.value


@pytest.mark.parametrize("enabled", [True, False])
def test_an_enablement_body_is_json_true_or_false(enabled: bool) -> None:
    assert load_body(ENABLEMENT_INPUT, {"enabled": enabled}, invalid_enablement) == {"enabled": enabled}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "enabled"),
        ({"enabled": "true"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"enabled": True, "x": 1}, "x"),
        ({"enabled": "no", "b": 1, "a": 2}, "a"),
    ],
)
def test_any_other_enablement_body_is_refused_naming_an_unknown_field_first(body: dict[str, Any], field: str) -> None:
    error = refused(ENABLEMENT_INPUT, body, invalid_enablement)
    assert (error.message, error.field) == ('The body must be {"enabled": true} or {"enabled": false}.', field)


def test_an_environment_body_is_its_name() -> None:
    assert load_body(ENVIRONMENT_INPUT, {"name": "production"}, invalid_environment) == {"name": "production"}


def test_an_unknown_field_in_an_environment_body_is_named_with_a_hint() -> None:
    error = refused(ENVIRONMENT_INPUT, {"name": "ok", "extra": 1}, invalid_environment)
    assert (error.message, error.field, error.hint) == ('Unknown field "extra".', "extra", 'Send {"name": …}.')


@pytest.mark.parametrize("body", [{}, {"name": 5}, {"name": None}, {"name": ["a"]}])
def test_an_environment_body_without_a_string_name_is_refused(body: dict[str, Any]) -> None:
    error = refused(ENVIRONMENT_INPUT, body, invalid_environment)
    assert (error.message, error.field) == ("name is required: 1 to 63 characters of a-z, 0-9 and '-'.", "name")
