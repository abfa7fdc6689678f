"""The issuers' settings: where they are reached and how minted keys are named, from the
environment only (docs/configuration.md)."""

from __future__ import annotations

import pytest

from spacesvc.errors import ConfigError
from spacesvc.settings import Settings

pytestmark = pytest.mark.unit


def test_the_issuers_defaults_are_digitaloceans_api_awss_iam_and_the_spacesvc_prefix() -> None:
    settings = Settings.from_env({})
    assert settings.digitalocean_api_url == "https://api.digitalocean.com"
    assert settings.iam_endpoint == "https://iam.amazonaws.com"
    assert settings.key_prefix == "spacesvc-"


def test_the_issuers_addresses_and_the_prefix_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "SPACESVC_DIGITALOCEAN_API_URL": "http://127.0.0.1:8080/",
            "SPACESVC_IAM_ENDPOINT": "https://iam.minio.internal:9000",
            "SPACESVC_KEY_PREFIX": "platform_",
        }
    )
    assert settings.digitalocean_api_url == "http://127.0.0.1:8080"
    assert settings.iam_endpoint == "https://iam.minio.internal:9000"
    assert settings.key_prefix == "platform_"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPACESVC_DIGITALOCEAN_API_URL", "api.digitalocean.com"),
        ("SPACESVC_DIGITALOCEAN_API_URL", "ftp://api.digitalocean.com"),
        ("SPACESVC_IAM_ENDPOINT", "https://iam.example.com?x=1"),
        ("SPACESVC_IAM_ENDPOINT", "https://host:notaport"),
        ("SPACESVC_KEY_PREFIX", "spaces svc"),
        ("SPACESVC_KEY_PREFIX", "p" * 33),
    ],
)
def test_a_bad_issuer_setting_is_one_line_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value) and "\n" not in str(refused.value)


def test_credentials_in_an_issuer_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"SPACESVC_IAM_ENDPOINT": "https://admin:hunter2-password@iam.example.com"})
    assert "SPACESVC_IAM_ENDPOINT" in str(refused.value) and "hunter2" not in str(refused.value)
