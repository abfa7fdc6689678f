"""What the service reads from text, checked without a server: durations, booleans, the Redis URL
of the rate limits, token lifetimes, ``Prefer: wait``, and the DSN in log lines."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp.test_utils import make_mocked_request

from backends.vault import parse_bool
from spacesvc.errors import ConfigError
from spacesvc.http.conditional import MAX_WAIT_SECONDS, preferred_wait
from spacesvc.postgres import masked_dsn
from spacesvc.settings import check_redis_url, parse_seconds
from spacesvc.tokens.model import TokenError, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"), [("75s", 75.0), ("500ms", 0.5), ("5m", 300.0), ("12h", 43_200.0), ("30d", 2_592_000.0)]
)
def test_a_duration_variable_takes_its_unit(text: str, seconds: float) -> None:
    assert parse_seconds({"SPACESVC_X": text}, "SPACESVC_X", default=1.0) == seconds


def test_a_duration_variable_unset_or_blank_is_its_default_and_a_bare_number_is_seconds() -> None:
    assert parse_seconds({}, "SPACESVC_X", default=2.5) == 2.5
    assert parse_seconds({"SPACESVC_X": "  "}, "SPACESVC_X", default=2.5) == 2.5
    assert parse_seconds({"SPACESVC_X": "7"}, "SPACESVC_X", default=2.5) == 7.0


@pytest.mark.parametrize("text", ["soon", "5 minutes", "-5s", "5w"])
def test_a_duration_variable_that_is_not_one_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=r"SPACESVC_X=.* must be a duration"):
        parse_seconds({"SPACESVC_X": text}, "SPACESVC_X", default=1.0)


@pytest.mark.parametrize(("text", "lifetime"), [("90s", timedelta(seconds=90)), ("12h", timedelta(hours=12))])
def test_a_token_lifetime_is_a_positive_duration(text: str, lifetime: timedelta) -> None:
    assert parse_duration(text) == lifetime


@pytest.mark.parametrize("text", ["0s", "1.5h", "forever", ""])
def test_a_token_lifetime_that_is_not_positive_or_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(TokenError, match="--expires-in"):
        parse_duration(text)


def test_vault_booleans_are_read_as_the_vault_cli_reads_them() -> None:
    assert [parse_bool("VAULT_SKIP_VERIFY", text) for text in ("1", "true", "T", None, "0", "False")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(ConfigError, match="VAULT_SKIP_VERIFY='yes' must be true or false"):
        parse_bool("VAULT_SKIP_VERIFY", "yes")


@pytest.mark.parametrize("url", ["redis://redis:6379/0", "rediss://:pw@cache.internal:6380", "redis://r"])
def test_a_redis_url_for_the_rate_limits_is_accepted(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize(
    "url", ["http://redis:6379", "redis://", "redis://:hunter2@r/zero", "redis://:hunter2@r:port/0"]
)
def test_a_bad_redis_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ConfigError, match="SPACESVC_RATE_LIMIT_STORAGE") as error:
        check_redis_url(url)
    assert "hunter2" not in str(error.value)


def test_a_dsn_in_a_log_line_hides_its_password_only() -> None:
    assert masked_dsn("postgresql://app:s3cret@db:5432/spacesvc") == "postgresql://app:***@db:5432/spacesvc"
    assert masked_dsn("postgresql://app@db/spacesvc") == "postgresql://app@db/spacesvc"
    masked = masked_dsn("postgresql://app@db/spacesvc?sslmode=require&password=s3cret")
    assert masked == "postgresql://app@db/spacesvc?sslmode=require&password=***"


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [("wait=30", 30), ("respond-async, wait=5", 5), ('wait="12"', 12), ("wait=600", MAX_WAIT_SECONDS)],
)
def test_prefer_wait_is_read_and_cut_to_the_longest_hold(prefer: str, seconds: int) -> None:
    assert preferred_wait(make_mocked_request("GET", "/", headers={"Prefer": prefer})) == seconds


@pytest.mark.parametrize("prefer", ["wait=0", "wait=soon", "return=minimal", "await=5"])
def test_a_prefer_header_without_a_usable_wait_is_ignored(prefer: str) -> None:
    assert preferred_wait(make_mocked_request("GET", "/", headers={"Prefer": prefer})) is None
