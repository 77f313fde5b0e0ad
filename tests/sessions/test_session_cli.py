"""``sagalog sessions list|show|close|stats`` against SQLite and PostgreSQL, in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anyio
import pytest
from sagalog.engine.sessions import Sessions
from sagalog.storage import connect

from sagalog.cli import main
from sagalog.clock import ManualClock

TEN_YEARS = datetime(2036, 1, 1, tzinfo=UTC) - datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A database with three sessions: cart-1 open, chat-1 closed, chat-2 expired."""
    url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))

    async def setup() -> None:
        clock = ManualClock()
        journal = await connect(url, clock=clock)
        sessions = Sessions(journal, clock=clock)
        await sessions.open("cart-1", kind="cart", attributes={"items": [1, 2]}, lifetime=TEN_YEARS)
        await sessions.bind_workflow("cart-1", "checkout-1", "signal")
        await sessions.open("chat-1", kind="chat")
        await sessions.close("chat-1", "bye", by_instance="support-bot")
        await sessions.open("chat-2", kind="chat", idle_timeout=60)
        clock.advance(60)
        await sessions.expire_if_due("chat-2")
        await journal.close()

    anyio.run(setup)
    return url


def sagalog(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = sagalog(capsys, "sessions", "list", "--db", url)
    lines = out.splitlines()
    assert status == 0
    assert lines[0].split() == [
        "SESSION",
        "KIND",
        "STATUS",
        "CREATED",
        "LAST",
        "ACTIVE",
        "DEADLINE/ENDED",
        "EVENTS",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["cart-1"][1:3] == ["cart", "open"] and rows["cart-1"][5:] == [
        "2036-01-01T00:00:00+00:00",
        "2",
    ]
    assert rows["chat-1"][1:3] == ["chat", "closed"]
    assert rows["chat-2"][1:3] == ["chat", "expired"]
    status, out, _ = sagalog(capsys, "sessions", "list", "--db", url, "--kind", "chat", "--status", "open")
    assert out == "no sessions\n"
    status, out, _ = sagalog(capsys, "sessions", "list", "--db", url, "--status", "expired", "--json")
    [expired] = json.loads(out)
    assert (expired["session_id"], expired["end_reason"], expired["next_deadline"]) == (
        "chat-2",
        "idle",
        None,
    )


def test_show(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = sagalog(capsys, "sessions", "show", "cart-1", "--db", url)
    assert status == 0
    assert "session:       cart-1\n" in out and "status:        open\n" in out
    assert "next deadline: 2036-01-01T00:00:00+00:00\n" in out
    assert "  items = [1, 2]\n" in out
    assert "  checkout-1  on end: signal  bound 2026-01-01T00:00:00+00:00\n" in out
    out = sagalog(capsys, "sessions", "show", "chat-1", "--db", url)[1]
    assert "status:        closed (bye)\n" in out
    assert "ended:         2026-01-01T00:00:00+00:00 by support-bot\n" in out
    status, out, _ = sagalog(capsys, "sessions", "show", "cart-1", "--db", url, "--json")
    shown = json.loads(out)
    assert shown["attributes"] == {"items": [1, 2]}
    assert shown["workflows"] == [
        {"instance_id": "checkout-1", "policy": "signal", "bound_at": "2026-01-01T00:00:00Z"}
    ]
    assert (shown["version"], shown["expires_at"]) == (2, "2036-01-01T00:00:00Z")


def test_close(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = sagalog(capsys, "sessions", "close", "cart-1", "--reason", "abandoned", "--db", url)
    assert (status, out) == (0, "closed session 'cart-1' (reason: abandoned)\n")
    status, out, _ = sagalog(capsys, "sessions", "close", "cart-1", "--db", url)
    assert out == "session 'cart-1' had already ended (closed); nothing changed\n"
    status, out, _ = sagalog(capsys, "sessions", "close", "chat-2", "--db", url, "--json")
    assert json.loads(out)["closed"] is False
    assert json.loads(out)["session"]["status"] == "expired"


def test_stats(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = sagalog(capsys, "sessions", "stats", "--db", url)
    assert status == 0
    assert "open now:           1 (cart 1)\n" in out
    assert "opened (all time):  3\nclosed (all time):  1\nexpired (all time): 1\n" in out
    assert "duration:           2 sessions, mean 30.0s (<=1s: 1, <=60s: 1)\n" in out
    assert "2026-01-01T00:00:00+00:00  3       1       1" in out
    status, out, _ = sagalog(capsys, "sessions", "stats", "--db", url, "--json")
    stats = json.loads(out)
    assert stats["open_by_kind"] == {"cart": 1}
    assert stats["duration_seconds"]["count"] == 2
    status, rebuilt, _ = sagalog(capsys, "sessions", "stats", "--db", url, "--json", "--rebuild")
    assert json.loads(rebuilt) == stats


def test_errors(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = sagalog(capsys, "sessions", "show", "ghost", "--db", url)
    assert (status, err) == (1, "sagalog: error: no session 'ghost' in namespace 'default'\n")
    status, _, err = sagalog(capsys, "sessions", "close", "bad id", "--db", url)
    assert status == 1 and "invalid session id 'bad id'" in err
    with pytest.raises(SystemExit):
        main(["sessions", "list", "--db", url, "--limit", "0"])
    assert "argument --limit: 0 is too small: use a number >= 1" in capsys.readouterr().err
