"""``sagalog dashboard`` and ``sagalog worker --dashboard-port`` as real processes."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent


def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET ``path`` from the console on ``port``: (status, decoded JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_for_line(stream: IO[bytes], pattern: str, seen: list[str]) -> re.Match[str]:
    """Read lines until one matches (the process exits, and the read ends, if it fails)."""
    for raw in stream:
        line = raw.decode(errors="replace")
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@contextmanager
def process(*argv: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A ``sagalog`` process, stopped with SIGTERM at the end (it must exit 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "sagalog", *argv],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=30)
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert status == 0


def test_dashboard_command_serves_the_api(sqlite_url: str) -> None:
    with process("dashboard", "--db", sqlite_url, "--port", "0", "--token", "ops=t0ken") as proc:
        assert proc.stdout is not None
        found = wait_for_line(
            proc.stdout, r"sagalog dashboard on http://127\.0\.0\.1:(\d+)/ \(namespace default\)", []
        )
        port = int(found.group(1))
        status, body = get(port, "/api/summary", token="t0ken")
        assert status == 200 and body["instances"] == {} and body["metrics"] == {}
        status, body = get(port, "/api/summary")
        assert status == 401 and body["error"]["code"] == "unauthorized"


def test_dashboard_beyond_loopback_makes_up_a_token(sqlite_url: str) -> None:
    env = {"SAGALOG_DASHBOARD_TOKEN": ""}
    with process("dashboard", "--db", sqlite_url, "--host", "0.0.0.0", "--port", "0", env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(wait_for_line(proc.stdout, r"http://0\.0\.0\.0:(\d+)/", []).group(1))
        token = wait_for_line(proc.stderr, r"use this token \(actor 'operator'\): (\S+)", []).group(1)
        assert get(port, "/api/summary")[0] == 401
        assert get(port, "/api/summary", token=token)[0] == 200


def test_dashboard_command_refuses_bad_options(sqlite_url: str) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-P", "-m", "sagalog", "dashboard", "--db", sqlite_url, *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad_port = run("--port", "70000")
    assert bad_port.returncode == 1
    assert "sagalog: error: dashboard port must be between 0 and 65535, not 70000" in bad_port.stderr
    bad_token = run("--token", "ops=")
    assert bad_token.returncode == 1
    assert "a console token must be NAME=SECRET or SECRET" in bad_token.stderr


@pytest.mark.slow
def test_worker_dashboard_port_serves_the_api_with_metrics(sqlite_url: str) -> None:
    env = {"PYTHONPATH": str(HERE), "SAGALOG_DB": sqlite_url, "SAGALOG_LEASE": "5"}
    argv = ("worker", "console_workflows", "--worker-id", "w-1", "--dashboard-port", "0")
    with process(*argv, env=env) as proc:
        assert proc.stderr is not None
        port = int(wait_for_line(proc.stderr, r"console on http://127\.0\.0\.1:(\d+)/", []).group(1))
        status, body = get(port, "/api/summary")
        assert status == 200
        assert body["workers"] == [{"id": "w-1", "in_flight": 0, "draining": False}]
        assert "sagalog_instances_claimed_total" in body["metrics"]
        assert get(port, "/api/instances")[1] == {"instances": []}
