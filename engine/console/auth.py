"""Bearer tokens of the console: who may act, and under which name the journal records it.

Tokens are given as ``NAME=SECRET`` (NAME is the actor recorded with every
action) or a bare ``SECRET`` (actor ``operator``). With no token configured,
a console on a loopback address is open (its actions are recorded as
``anonymous``); one listening beyond loopback makes up a token at start
(:func:`resolve_tokens`), since anyone on the network could reach it.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable

from sagalog.errors import ConfigurationError

DEFAULT_ACTOR = "operator"
"""The actor of a token given without a name."""

ANONYMOUS = "anonymous"
"""The actor recorded when no token is configured (loopback only)."""

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Tokens:
    """The configured tokens; empty means no authentication.

    Args:
        specs: ``NAME=SECRET`` or bare ``SECRET`` strings.

    Raises:
        ConfigurationError: an empty secret, a malformed name, or a secret given twice.
    """

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self._by_secret: dict[str, str] = {}
        for spec in specs:
            actor, secret = parse_token(spec)
            if secret in self._by_secret:
                raise ConfigurationError(f"the secret of console token {actor!r} is given twice")
            self._by_secret[secret] = actor

    @property
    def required(self) -> bool:
        """Whether requests must carry a token."""
        return bool(self._by_secret)

    @property
    def actors(self) -> list[str]:
        """The actor names, in the order given."""
        return list(self._by_secret.values())

    def actor(self, authorization: str) -> str | None:
        """The actor an ``Authorization`` header authenticates, or None.

        Every configured secret is compared in constant time, so the answer
        takes as long whichever secret (if any) matches.
        """
        if not self.required:
            return ANONYMOUS
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        offered = given.strip().encode()
        found: str | None = None
        for secret, actor in self._by_secret.items():
            if hmac.compare_digest(secret.encode(), offered):
                found = actor
        return found


def parse_token(spec: str) -> tuple[str, str]:
    """``(actor, secret)`` of ``NAME=SECRET`` or a bare ``SECRET``.

    A secret that itself contains ``=`` (base64) must be given with its name
    (``ops=c2VjcmV0=``): ``NAME=`` with nothing after it is refused.

    Raises:
        ConfigurationError: the secret is empty or contains whitespace.
    """
    name, sep, secret = spec.partition("=")
    if not sep or not _NAME.match(name):
        name, secret = DEFAULT_ACTOR, spec
    if not secret.strip() or any(c.isspace() for c in secret):
        raise ConfigurationError(
            "a console token must be NAME=SECRET or SECRET, with a non-empty secret and no spaces"
        )
    return name, secret


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def resolve_tokens(host: str, specs: Iterable[str]) -> tuple[Tokens, str | None]:
    """The tokens to require, and a generated secret when one had to be made.

    A console listening beyond loopback with no token configured gets a fresh
    random one (actor ``operator``); the caller prints it once.
    """
    tokens = Tokens(specs)
    if tokens.required or is_loopback(host):
        return tokens, None
    secret = secrets.token_urlsafe(24)
    return Tokens([secret]), secret
