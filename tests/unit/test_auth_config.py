"""AUTH and the OIDC_* settings: off by default, and a bad or missing one is one ConfigError."""
from __future__ import annotations

import subprocess
import sys

import pytest

from messaging.settings import ConfigError
from order_service import config
from stack.processes import ROOT

OIDC = {"AUTH": "oidc", "OIDC_ISSUER": "https://sso.campus.example/realms/food",
        "OIDC_AUDIENCE": "order-service"}


def test_auth_is_off_by_default():
    settings = config.load({})
    assert (settings.auth, settings.oidc_issuer, settings.oidc_audience) == ("off", None, None)


def test_oidc_reads_its_settings_with_their_defaults():
    settings = config.load({**OIDC, "AUTH": "OIDC"})
    assert (settings.auth, settings.oidc_issuer, settings.oidc_audience) == (
        "oidc", OIDC["OIDC_ISSUER"], "order-service")
    assert settings.oidc_jwks_url is None, "discovered from the issuer"
    assert (settings.oidc_staff_role, settings.oidc_roles_claim, settings.oidc_jwks_cooldown) == (
        "staff", "roles", 30.0)
    custom = config.load({**OIDC, "OIDC_JWKS_URL": "https://sso.campus.example/keys",
                          "OIDC_STAFF_ROLE": "kitchen", "OIDC_ROLES_CLAIM": "realm_access.roles",
                          "OIDC_JWKS_COOLDOWN": "5s"})
    assert (custom.oidc_jwks_url, custom.oidc_staff_role, custom.oidc_roles_claim,
            custom.oidc_jwks_cooldown) == ("https://sso.campus.example/keys", "kitchen",
                                           "realm_access.roles", 5.0)


@pytest.mark.parametrize("env, message", [
    ({"AUTH": "oidc"}, "AUTH=oidc needs OIDC_ISSUER and OIDC_AUDIENCE"),
    ({**OIDC, "OIDC_AUDIENCE": " "}, "AUTH=oidc needs OIDC_AUDIENCE"),
    ({**OIDC, "OIDC_ISSUER": ""}, "AUTH=oidc needs OIDC_ISSUER"),
    ({"AUTH": "jwt"}, "AUTH must be one of OFF, OIDC, got 'jwt'"),
    ({**OIDC, "OIDC_ISSUER": "sso.campus.example"}, "OIDC_ISSUER must be an http:// or https:// URL"),
    ({**OIDC, "OIDC_JWKS_URL": "file:///etc/keys"}, "OIDC_JWKS_URL must be an http:// or https:// URL"),
    ({**OIDC, "OIDC_STAFF_ROLE": ""}, "OIDC_STAFF_ROLE must not be empty"),
    ({**OIDC, "OIDC_JWKS_COOLDOWN": "2h"}, "OIDC_JWKS_COOLDOWN must be between"),
])
def test_a_bad_or_missing_setting_is_a_config_error(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(env)


def test_the_service_says_so_in_one_line_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "order_service"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "AUTH": "oidc",
                                                        "OIDC_AUDIENCE": "order-service"})
    assert result.returncode == 2
    assert result.stderr.strip() == "order-service: configuration error: AUTH=oidc needs OIDC_ISSUER"
