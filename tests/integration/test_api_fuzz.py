"""schemathesis against the live OrderService: no 5xx, and every answer conforms to /openapi.json.

One OrderService and InventoryService (real processes, a private vhost) serve the whole module,
once with AUTH=off and once with AUTH=oidc: then schemathesis signs its requests with a student's
bearer token from a provider of the test's own, and its `ignored_auth` check also sends them
without a token and with a made-up one. Every check is on; the examples are derandomized from a
fixed seed so CI sees the same cases.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from order_service.config import MAX_REQUEST_LINE
from stack.broker import Broker
from stack.processes import Stack
from tests.identity import IdentityProvider

# The CLI's `--checks all`, `--seed` and `--generation-deterministic`, as pytest settings.
FUZZ_CONFIG = {
    "seed": 20261130,
    "generation": {"max-examples": 40, "deterministic": True},
    "checks": {"negative_data_rejection": {"expected-statuses": ["400", "404", "405", "413",
                                                                  "414", "415"]},
               # A valid order may still meet its Idempotency-Key's earlier, different order: 422.
               "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "404", "409", "422"]}},
}


@pytest.fixture(scope="module", params=["off", "oidc"], ids=lambda auth: f"AUTH={auth}")
def idp(request: pytest.FixtureRequest) -> Iterator[IdentityProvider | None]:
    """With AUTH=oidc, the provider whose tokens OrderService trusts; None with AUTH=off."""
    if request.param == "off":
        yield None
        return
    provider = IdentityProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def order_service(broker: Broker, idp: IdentityProvider | None,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """OrderService and InventoryService in a vhost of their own, for the whole module."""
    vhost = broker.create_vhost("fuzz")
    auth = {} if idp is None else {"AUTH": "oidc", "OIDC_ISSUER": idp.issuer,
                                   "OIDC_AUDIENCE": idp.audience, "OIDC_JWKS_URL": idp.jwks_url}
    stack = Stack(vhost, Path(tmp_path_factory.mktemp("fuzz")), **auth)
    try:
        yield stack.start("order", "inventory")
    finally:
        stack.close()
        broker.delete_vhost(vhost)


@pytest.fixture(scope="module")
def api(order_service: Stack, idp: IdentityProvider | None) -> schemathesis.BaseSchema:
    """The live service's own description, as schemathesis loads it (with a student's token)."""
    signed = {} if idp is None else {  # a request without the token is refused with a 401
        "auth": {"openapi": {"bearer": {"bearer": idp.token(sub="user123", lifetime=3600)}}},
        "checks": {**FUZZ_CONFIG["checks"], "negative_data_rejection": {"expected-statuses": [
            *FUZZ_CONFIG["checks"]["negative_data_rejection"]["expected-statuses"], "401"]},
                   # and a body naming another user than the token's is a 403
                   "positive_data_acceptance": {"expected-statuses": [
            *FUZZ_CONFIG["checks"]["positive_data_acceptance"]["expected-statuses"], "403"]}}}
    config = SchemathesisConfig.from_dict({**FUZZ_CONFIG, **signed})
    return schemathesis.openapi.from_url(f"{order_service.order_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
def test_every_answer_conforms_and_none_is_a_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_linked_calls_conform(api: schemathesis.BaseSchema) -> None:
    """Place orders, then follow the 202's links to the order and to the user's orders."""
    api.as_state_machine().run(settings=settings(
        max_examples=15, stateful_step_count=4, derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))


def test_a_request_line_over_the_limit_is_the_documented_414(order_service: Stack, api) -> None:
    url = f"{order_service.order_url}/orders?user_id={'u' * MAX_REQUEST_LINE}"
    response = requests.get(url, timeout=10)
    assert response.status_code == 414
    described = api.raw_schema["components"]["responses"]["URITooLong"]
    assert str(MAX_REQUEST_LINE) in described["description"]
    assert requests.get(url[:MAX_REQUEST_LINE - 100], timeout=10).status_code != 414
