"""The OpenAPI description against the code: every route documented, every documented limit enforced."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from messaging.settings import StorageSettings
from order_service import config, handlers, idempotency, openapi
from order_service.app import create_app
from order_service.handlers import InvalidRequest

IMPLICIT = {"HEAD", "OPTIONS"}  # answered by Flask for every route, never described
# What the app can answer (429 only with RATE_LIMIT_ORDERS set).
STATUSES = {"200", "202", "304", "400", "404", "405", "409", "413", "414", "415", "422", "429", "503"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)))
    return create_app(settings)


@pytest.fixture
def doc(app: Flask) -> dict[str, Any]:
    return openapi.document(app.config["MAX_CONTENT_LENGTH"])


def routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, METHOD) of every Flask route, `<name>` spelled `{name}`."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(path, method) for method in rule.methods - IMPLICIT}
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


def schema_of(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": doc["components"]})


def test_every_route_is_documented_and_every_documented_operation_is_a_route(app, doc):
    undescribed, gone = routes(app) - documented(doc), documented(doc) - routes(app)
    assert not undescribed, f"describe these routes in order_service/openapi.py: {undescribed}"
    assert not gone, f"order_service/openapi.py describes routes the app does not have: {gone}"


def test_the_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)


def test_the_service_serves_its_document(app, doc):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == json.loads(json.dumps(doc))


def test_every_status_the_app_answers_is_documented(doc):
    answered = {code for item in doc["paths"].values() for operation in item.values()
                for code in operation["responses"]}
    assert answered == STATUSES
    for item in doc["paths"].values():
        for operation in item.values():
            assert "405" in operation["responses"], "any path answers other methods with 405"


def test_the_rate_limits_answer_is_the_documented_429(tmp_path, doc):
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)),
                               rate_limit_orders="1/minute")
    client = create_app(settings).test_client()
    order = {"user_id": "u", "item": "Burger", "quantity": 1}
    assert client.post("/order", json=order).status_code == 202
    refused = client.post("/order", json=order)
    assert refused.status_code == 429
    documented = doc["components"]["responses"][doc["paths"]["/order"]["post"]["responses"]["429"]
                                                ["$ref"].rsplit("/", 1)[1]]
    assert refused.mimetype in documented["content"]
    schema_of(doc, "Error").validate(refused.get_json())
    retry_after = documented["headers"]["Retry-After"]
    assert re.fullmatch(retry_after["schema"]["pattern"], refused.headers["Retry-After"])


def test_the_body_limit_is_the_apps(app, doc):
    body = doc["paths"]["/order"]["post"]["requestBody"]
    assert body["x-max-body-bytes"] == app.config["MAX_CONTENT_LENGTH"] == config.DEFAULTS.max_body_bytes
    assert set(body["content"]) == {"application/json"}


def test_the_whitespace_the_document_excludes_is_what_strip_removes():
    spelled = {code for low, high in openapi.WHITESPACE for code in range(low, high + 1)}
    assert spelled == {code for code in range(sys.maxunicode + 1) if chr(code).isspace()}


def accepts(payload: Any) -> bool:
    try:
        handlers.validate(payload)
        return True
    except InvalidRequest:
        return False


TEXT = st.one_of(st.text(max_size=70),
                 st.text(st.sampled_from(" \t\x1c\x85\u3000\x00a\n\u202e\u200d\u200c\ufeff\U000e0001"),
                         max_size=4),
                 st.integers(60, 70).map(lambda n: "x" * n))
VALUES = st.one_of(TEXT, st.integers(-5, 105), st.floats(allow_nan=False), st.booleans(), st.none())
BODIES = st.dictionaries(st.sampled_from(["user_id", "item", "quantity", "size"]), VALUES)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(BODIES)
@example({"user_id": "u", "item": "x" * 64, "quantity": 100})
@example({"user_id": "u", "item": "x" * 65, "quantity": 1})
@example({"user_id": "u\x00", "item": "Burger", "quantity": 1})
@example({"user_id": "\ufeff", "item": "\x1f", "quantity": 1})
@example({"user_id": "u", "item": "Burger", "quantity": 2.0})
@example({"user_id": "u", "item": "Burger", "quantity": 0})
def test_the_documented_body_is_exactly_what_the_validator_accepts(body):
    doc = openapi.document(config.DEFAULTS.max_body_bytes)
    assert schema_of(doc, "NewOrder").is_valid(body) == accepts(body), body


def test_the_documented_text_pattern_refuses_exactly_the_characters_the_validator_refuses():
    pattern = re.compile(openapi.text_pattern())
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # no JSON text holds a lone surrogate
        text = f"a{chr(code)}"
        assert bool(pattern.match(text)) == accepts({"user_id": text, "item": "x", "quantity": 1}), \
            f"U+{code:04X}"


def test_the_documented_example_is_accepted(doc):
    examples = doc["components"]["schemas"]["NewOrder"]["examples"]
    assert examples
    for body in examples:
        assert schema_of(doc, "NewOrder").is_valid(body) and accepts(body)


def accepts_query(args: dict[str, str]) -> bool:
    try:
        handlers.list_query(args)
        return True
    except InvalidRequest:
        return False


@pytest.mark.parametrize("name", ["limit", "offset"])
def test_the_documented_page_bounds_are_the_parsers(doc, name):
    parameter = next(p for p in doc["paths"]["/orders"]["get"]["parameters"] if p["name"] == name)
    low, high = parameter["schema"]["minimum"], parameter["schema"]["maximum"]
    assert accepts_query({name: str(low)}) and accepts_query({name: str(high)})
    assert not accepts_query({name: str(high + 1)})
    assert not accepts_query({name: str(low - 1)})
    assert getattr(handlers.ListQuery(), name) == parameter["schema"]["default"]


def test_the_documented_query_parameters_are_the_parsers(doc):
    parameters = {p["name"]: p["schema"] for p in doc["paths"]["/orders"]["get"]["parameters"]}
    assert set(parameters) == {"status", "user_id", "limit", "offset", "before"}
    assert set(handlers.LIST_PARAMETERS) == set(parameters)
    assert not accepts_query({"page": "1"})
    low, high = parameters["before"]["minimum"], parameters["before"]["maximum"]
    assert accepts_query({"before": str(low)}) and accepts_query({"before": str(high)})
    assert not accepts_query({"before": str(low - 1)}) and not accepts_query({"before": str(high + 1)})
    assert parameters["status"]["enum"] == list(handlers.STATUSES)
    assert all(accepts_query({"status": status}) for status in handlers.STATUSES)
    assert not accepts_query({"user_id": "a\x00"}) and accepts_query({"user_id": ""})


def accepts_key(raw: str) -> bool:
    try:
        return idempotency.parse_key(raw) is not None
    except InvalidRequest:
        return False


ASCII = st.characters(max_codepoint=0x7F)
KEYS = st.one_of(st.text(ASCII, max_size=8),
                 st.text(st.sampled_from('"\\ a~!\x7f\x1f\u00e9'), max_size=4),
                 st.builds(lambda inner: f'"{inner}"', st.text(ASCII, max_size=6)),
                 st.integers(250, 260).map(lambda n: "k" * n),
                 st.integers(250, 260).map(lambda n: f'"{"k" * n}"'))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(KEYS)
@example('"k"')
@example('""')
@example('"')
@example("k" * 255)
@example("k" * 256)
@example("k\n")  # Python's `$` matches before a final newline
def test_the_documented_idempotency_key_is_exactly_what_the_app_accepts(raw):
    doc = openapi.document(config.DEFAULTS.max_body_bytes)
    [parameter] = [p for p in doc["paths"]["/order"]["post"]["parameters"]
                   if p["name"] == idempotency.HEADER]
    assert bool(re.search(parameter["schema"]["pattern"], raw)) == accepts_key(raw), repr(raw)


# --- with AUTH=oidc ---

@pytest.fixture
def signed_in_doc(tmp_path: Path) -> dict[str, Any]:
    settings = config.Settings(storage=StorageSettings(data_dir=str(tmp_path)), auth="oidc",
                               oidc_issuer="https://sso.campus.example", oidc_audience="order-service")
    return create_app(settings).test_client().get("/openapi.json").get_json()


def test_with_sign_in_the_document_is_valid_and_names_the_bearer_scheme(signed_in_doc):
    validate_spec(signed_in_doc)
    assert signed_in_doc["components"]["securitySchemes"] == {"bearer": {
        **openapi.BEARER, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def test_with_sign_in_every_order_route_needs_the_token_and_documents_its_refusals(signed_in_doc):
    operations = {op["operationId"]: op for item in signed_in_doc["paths"].values() for op in item.values()}
    for operation_id, operation in operations.items():
        refusals = openapi.SIGNED_IN.get(operation_id)
        assert operation["security"] == ([{"bearer": []}] if refusals else []), operation_id
        assert {"401", "403"} & set(operation["responses"]) == {"401", "403"} & set(refusals or ())
    assert set(operations) - set(openapi.SIGNED_IN) == {
        "health", "page", "pageFile", "metrics", "openapi"}
    unauthorized = signed_in_doc["components"]["responses"]["Unauthorized"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True


def test_with_sign_in_a_new_order_may_leave_user_id_out(signed_in_doc, doc):
    assert "user_id" in doc["components"]["schemas"]["NewOrder"]["required"]
    new_order = schema_of(signed_in_doc, "NewOrder")
    assert new_order.is_valid({"item": "Burger", "quantity": 1})


def test_without_sign_in_the_document_names_no_scheme(doc):
    assert "securitySchemes" not in doc["components"]
    assert not any("security" in op for item in doc["paths"].values() for op in item.values())
