"""Bearer tokens: who may call the API, and whose name the journal records."""

from __future__ import annotations

import io

import pytest
from console_helpers import Http, running_stack
from sagalog.engine.console.auth import Tokens, is_loopback, parse_token, resolve_tokens
from sagalog.replay.inspect import print_timeline

from sagalog.errors import ConfigurationError

pytestmark = pytest.mark.anyio


async def test_every_api_route_needs_a_configured_token(backend_url: str) -> None:
    async with running_stack(backend_url, tokens=["alice=s3cret", "plain-secret"]) as stack:
        await stack.client.start("order", {"id": "w", "approval": True}, id="w")
        await stack.settle("w", "running")
        before = [(e.type, e.version) for e in await stack.journal.read_stream("wf-w")]
        http = stack.http
        for path, method in [
            ("/api/summary", "GET"),
            ("/api/instances", "GET"),
            ("/api/instances/w/cancel", "POST"),
        ]:
            missing = await http.request(method, path, {} if method == "POST" else None)
            assert missing.status == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert missing.error == (
                "unauthorized",
                "this console needs a token: send 'Authorization: Bearer <token>'",
            )
            wrong = await http.request(method, path, token="guess")
            assert wrong.status == 401
            assert wrong.error == ("unauthorized", "the token is wrong or not a Bearer token")
        basic = await http.get("/api/summary", headers=[("Authorization", "Basic czNjcmV0")])
        assert basic.status == 401
        unknown_route = await http.get("/api/nowhere")
        assert unknown_route.status == 401  # routes are not revealed without a token
        assert [(e.type, e.version) for e in await stack.journal.read_stream("wf-w")] == before
        # The page itself needs no token (it asks for one): never 401.
        assert (await http.get("/")).status != 401
        assert (await http.get("/static/app.js")).status != 401

        assert (await http.get("/api/summary", token="s3cret")).status == 200
        signal = await http.post("/api/instances/w/signal", {"name": "nudge"}, token="plain-secret")
        assert signal.status == 200
        cancel = await http.post("/api/instances/w/cancel", {"reason": "test"}, token="s3cret")
        assert cancel.status == 200
        metadata = {e.type: e.metadata for e in await stack.journal.read_stream("wf-w")}
        assert metadata["SignalReceived"]["actor"] == "operator"  # a bare secret's actor
        assert metadata["CancelRequested"]["actor"] == "alice"
        assert metadata["CancelRequested"]["remote"] == "127.0.0.1"
        # `sagalog replay show ID --full` shows who did it.
        shown = io.StringIO()
        await print_timeline(stack.journal, "w", out=shown, full=True, colour=False)
        assert '"actor": "alice"' in shown.getvalue() and '"via": "console"' in shown.getvalue()


def test_tokens_parse_names_and_refuse_bad_ones() -> None:
    assert parse_token("alice=s3cret") == ("alice", "s3cret")
    assert parse_token("s3cret") == ("operator", "s3cret")
    assert parse_token("bob=a=b") == ("bob", "a=b")
    with pytest.raises(ConfigurationError, match="non-empty secret and no spaces"):
        parse_token("alice=")
    with pytest.raises(ConfigurationError, match="non-empty secret and no spaces"):
        parse_token("two words")
    with pytest.raises(ConfigurationError, match="of console token 'bob' is given twice"):
        Tokens(["alice=x", "bob=x"])
    tokens = Tokens(["alice=x", "y"])
    assert tokens.actor("Bearer x") == "alice" and tokens.actor("bearer y") == "operator"
    assert tokens.actor("Bearer z") is None and tokens.actor("") is None and tokens.actor("x") is None
    assert Tokens().actor("") == "anonymous"


def test_a_token_is_generated_beyond_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    tokens, generated = resolve_tokens("127.0.0.1", [])
    assert generated is None and not tokens.required
    tokens, generated = resolve_tokens("0.0.0.0", [])
    assert generated is not None and len(generated) >= 32
    assert tokens.actor(f"Bearer {generated}") == "operator"
    configured, generated = resolve_tokens("0.0.0.0", ["ops=abc"])
    assert generated is None and configured.actors == ["ops"]


async def test_keepalive_client_sees_tokens_per_request(backend_url: str) -> None:
    async with running_stack(backend_url, tokens=["ops=abc"]) as stack:
        http = Http(stack.port, token="abc")
        try:
            assert (await http.get("/api/summary")).status == 200
            assert (await http.get("/api/summary", token="nope")).status == 401
            assert (await http.get("/api/instances")).status == 200
            assert http.connections == 1
        finally:
            await http.close()
