"""Who may call the REST API: bearer tokens checked against the config's SHA-256 hashes, in constant time.

With no token configured (the default, on a loopback bind) every request is served. Otherwise a request needs
``Authorization: Bearer TOKEN`` whose SHA-256 matches a configured token; a ``reader`` token may only read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence

from nlb_sdn.config.rest import Rest, RestRole, RestToken
from nlb_sdn.rest.errors import HttpError

LOG = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
"""Methods a ``reader`` token may use."""

REALM = 'Bearer realm="nlb-sdn"'


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a token, as written in ``controller.rest.tokens[].sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


def _unauthorized(detail: str, error: str | None = None) -> HttpError:
    """A 401 with the ``WWW-Authenticate: Bearer`` challenge (and the RFC 6750 error code, if any)."""
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return HttpError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def find_token(presented: str, tokens: Sequence[RestToken]) -> RestToken | None:
    """The configured token whose hash matches ``presented``; every hash is compared, each in constant time."""
    digest = token_sha256(presented)
    found: RestToken | None = None
    for token in tokens:
        if hmac.compare_digest(digest, token.sha256) and found is None:
            found = token
    return found


def authorize(settings: Rest, method: str, authorization: str | None) -> RestToken | None:
    """The caller's token (None when the API is open); 401 without a known bearer token, 403 when its role is too
    weak for ``method``. Never logs or returns the token."""
    if settings.open:
        return None
    if authorization is None:
        raise _unauthorized("Authorization: a bearer token is required")
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("Authorization: expected 'Bearer TOKEN'", "invalid_request")
    token = find_token(presented, settings.tokens)
    if token is None:
        LOG.warning("REST %s refused: unknown bearer token", method)
        raise _unauthorized("Authorization: unknown token", "invalid_token")
    if token.role != RestRole.ADMIN and method not in READ_METHODS:
        LOG.warning("REST %s refused: token %r has role %s", method, token.name, token.role)
        raise HttpError(403, "forbidden", f"token {token.name!r} has role {token.role}; {method} needs admin")
    return token
