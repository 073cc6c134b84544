"""Bearer token verification (order_service/auth.py) against a provider of the test's own, whose keys
are minted here and served over HTTP on 127.0.0.1."""
from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from order_service import auth
from tests.identity import DISCOVERY, JWKS, IdentityProvider, rsa_key


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def verifier(idp: IdentityProvider, discover: bool = False, cooldown: float = 0.0,
             **kwargs) -> auth.Verifier:
    return auth.Verifier(idp.issuer, idp.audience, None if discover else idp.jwks_url, cooldown,
                         **kwargs)


def refused(check: auth.Verifier, token: str) -> str:
    with pytest.raises(auth.InvalidToken) as caught:
        check.claims(token)
    assert caught.value.error == "invalid_token"
    return caught.value.description.lower()


def test_a_good_token_names_its_subject_and_roles(idp):
    claims = verifier(idp).claims(idp.token(sub="alice", roles=("staff",)))
    assert claims["sub"] == "alice"
    assert auth.caller_of(claims, "roles", "staff") == auth.Caller("alice", staff=True)
    assert auth.caller_of(claims, "roles", "chef") == auth.Caller("alice", staff=False)


def test_an_elliptic_curve_key_verifies_es256(idp):
    kid = idp.add_key(ec.generate_private_key(ec.SECP256R1()))
    assert verifier(idp).claims(idp.token(kid=kid, alg="ES256"))["sub"] == "alice"


def test_an_expired_token_is_refused(idp):
    assert "expired" in refused(verifier(idp), idp.token(lifetime=-auth.LEEWAY_SECONDS - 5))


def test_a_token_for_another_audience_is_refused(idp):
    assert "audience" in refused(verifier(idp), idp.token(aud="another-service"))


def test_a_token_of_another_issuer_is_refused(idp):
    assert "issuer" in refused(verifier(idp), idp.token(iss="https://elsewhere.example"))


def test_a_token_without_a_subject_is_refused(idp):
    token = jwt.encode({k: v for k, v in idp.claims().items() if k != "sub"}, idp.keys[idp.kid],
                       algorithm="RS256", headers={"kid": idp.kid})
    assert "sub" in refused(verifier(idp), token)


def test_alg_none_is_refused(idp):
    assert "alg" in refused(verifier(idp), idp.alg_none_token())


def test_an_hmac_token_signed_with_the_public_key_is_refused(idp):
    """The classic confusion: HS256 with the published RSA key as the secret."""
    assert "alg" in refused(verifier(idp), idp.hmac_token())


def test_a_token_signed_by_an_unpublished_key_under_a_published_kid_is_refused(idp):
    stranger = rsa_key()
    token = jwt.encode(idp.claims(), stranger, algorithm="RS256", headers={"kid": idp.kid})
    assert "signature" in refused(verifier(idp), token)


def test_the_jwks_alg_pins_the_algorithm(idp):
    kid = idp.add_key(rsa_key(), alg="PS256")
    check = verifier(idp)
    assert check.claims(idp.token(kid=kid, alg="PS256"))["sub"] == "alice"
    refused(check, idp.token(kid=kid, alg="RS256"))
    assert check.claims(idp.token(alg="PS384"))["sub"] == "alice", "a JWK without alg: any RSA one"


def test_only_the_asymmetric_algorithms_that_fit_the_key_are_allowed(idp):
    ed_kid = idp.add_key(ed25519.Ed25519PrivateKey.generate())
    check = verifier(idp)
    keys = {kid: check.keys().get_signing_key(kid) for kid in (idp.kid, ed_kid)}
    assert auth.algorithms_for(keys[idp.kid]) == list(auth.RSA)
    assert auth.algorithms_for(keys[ed_kid]) == ["EdDSA"]
    assert not {"none", "HS256", "HS384", "HS512"} & set(auth.ALGORITHMS)


def test_a_symmetric_key_in_the_jwks_is_never_trusted(idp):
    """Even a provider that publishes an `oct` key (a shared secret) cannot make HS256 acceptable."""
    secret = b"a-shared-secret-of-32-bytes-len!"
    idp.published.append({"kty": "oct", "kid": "shared", "k": jwt.utils.base64url_encode(secret).decode(),
                          "alg": "HS256", "use": "sig"})
    token = jwt.encode(idp.claims(), secret, algorithm="HS256", headers={"kid": "shared"})
    refused(verifier(idp), token)


def test_garbage_is_refused(idp):
    refused(verifier(idp), "not-a-jwt")


def test_a_rotated_key_is_picked_up_and_the_old_one_dropped_without_a_new_verifier(idp):
    check = verifier(idp)
    old = idp.token()
    assert check.claims(old)["sub"] == "alice"
    idp.rotate()
    assert check.claims(idp.token(sub="bob"))["sub"] == "bob"  # unknown kid: the set is fetched again
    assert idp.hits[JWKS] == 2
    refused(check, old)


def test_unknown_key_ids_refetch_the_keys_at_most_once_per_cooldown(idp):
    check = verifier(idp, cooldown=60.0)
    check.claims(idp.token())
    for _ in range(5):
        stranger = idp.add_key(rsa_key(), publish=False)
        assert "unable to find a signing key" in refused(check, idp.token(kid=stranger))
    assert idp.hits[JWKS] == 1, "the made-up key ids cost no fetch within the cooldown"


def test_without_a_cooldown_each_unknown_key_id_refetches(idp):
    """The control for the test above: the count does move when nothing holds it back."""
    check = verifier(idp, cooldown=0.0)
    check.claims(idp.token())
    for _ in range(3):
        refused(check, idp.token(kid=idp.add_key(rsa_key(), publish=False)))
    assert idp.hits[JWKS] == 4


def test_the_jwks_url_is_discovered_from_the_issuer_once(idp):
    check = verifier(idp, discover=True)
    for _ in range(3):
        assert check.claims(idp.token())["sub"] == "alice"
    assert (idp.hits[DISCOVERY], idp.hits[JWKS]) == (1, 1)


def test_a_discovery_document_of_another_issuer_is_not_trusted(idp):
    check = auth.Verifier(idp.issuer + "/realms/other", idp.audience)
    with pytest.raises(auth.KeysUnavailable):
        check.claims(idp.token())


def test_a_failed_discovery_is_retried_after_a_pause_not_on_every_request(idp):
    now = [100.0]
    check = auth.Verifier(idp.issuer + "/gone", idp.audience, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(auth.KeysUnavailable):
            check.claims(idp.token())
    assert idp.hits["/gone" + DISCOVERY] == 1
    now[0] += auth.DISCOVERY_RETRY_SECONDS
    with pytest.raises(auth.KeysUnavailable):
        check.claims(idp.token())
    assert idp.hits["/gone" + DISCOVERY] == 2


def test_an_unreachable_jwks_is_unavailable_not_the_callers_fault(idp):
    token, url = idp.token(), idp.jwks_url
    idp.close()
    with pytest.raises(auth.KeysUnavailable):
        auth.Verifier(idp.issuer, idp.audience, url).claims(token)


@pytest.mark.parametrize("header, description, error", [
    (None, "a bearer token is required", None),
    ("Basic dXNlcjpwYXNz", "a bearer token is required", None),
    ("Bearer ", "the bearer token is empty", "invalid_token"),
])
def test_the_authorization_header_must_carry_a_bearer_token(header, description, error):
    with pytest.raises(auth.InvalidToken) as caught:
        auth.bearer_token(header)
    assert (caught.value.description, caught.value.error) == (description, error)
    assert auth.bearer_token("bearer abc.def.ghi ") == "abc.def.ghi"


def test_the_challenge_follows_rfc_6750():
    assert auth.challenge(auth.InvalidToken("x", error=None)) == 'Bearer realm="order-service"'
    assert auth.challenge(auth.InvalidToken('Signature "bad"\n')) == (
        'Bearer realm="order-service", error="invalid_token", error_description="Signature bad"')


@pytest.mark.parametrize("claims, claim, expected", [
    ({"roles": ["staff", "student"]}, "roles", {"staff", "student"}),
    ({"roles": "staff student"}, "roles", {"staff", "student"}),
    ({"realm_access": {"roles": ["staff"]}}, "realm_access.roles", {"staff"}),
    ({"roles": [1, None, "staff"]}, "roles", {"staff"}),
    ({"roles": {"staff": True}}, "roles", set()),
    ({}, "roles", set()),
])
def test_roles_are_read_from_the_named_claim(claims, claim, expected):
    assert auth.roles(claims, claim) == expected


@pytest.mark.parametrize("sub", [None, "", "  ", 42, "nul\x00"])
def test_a_subject_that_cannot_own_orders_is_refused(sub):
    with pytest.raises(auth.InvalidToken):
        auth.caller_of({"sub": sub}, "roles", "staff")
