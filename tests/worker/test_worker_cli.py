"""``sagalog worker`` and ``sagalog start|signal|cancel|status|list`` on the embedded SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagalog.cli import main

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    monkeypatch.setenv("SAGALOG_DB", url)
    monkeypatch.setenv("SAGALOG_MODULES", "chaos_workflows")
    return url


@pytest.fixture
def worker(db: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``sagalog worker`` process on the SQLite file, stopped with SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(TOOLS), "SAGALOG_LEASE": "5"}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "sagalog", "worker", "chaos_workflows", "--worker-id", "cli-w"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log.close()
    text = (tmp_path / "worker.log").read_text()
    assert "worker cli-w on sqlite:///" in text and "worker cli-w stopped" in text


def sagalog(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_start_wait_status_and_list(worker: object, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = sagalog(capsys, "start", "noop_saga", "1", "--id", "n1", "--wait", "30")
    assert status == 0
    assert out == "started noop_saga as n1\ncompleted: 4\n"
    status, out, _ = sagalog(capsys, "status", "n1")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("n1: noop_saga is completed (version ")
    assert "nothing" in out and lines[-1] == "result: 4"
    status, out, _ = sagalog(capsys, "status", "n1", "--json")
    shown = json.loads(out)
    assert (shown["id"], shown["status"], shown["result"]) == ("n1", "completed", 4)
    assert [s["name"] for s in shown["steps"]] == ["nothing"] * 3

    assert sagalog(capsys, "start", "approval", '"expense 12"', "--id", "a1", "--json")[1] == (
        '{\n  "id": "a1",\n  "workflow": "approval"\n}\n'
    )
    status, out, _ = sagalog(capsys, "signal", "a1", "approved", '{"by": "bo"}')
    assert out == "sent signal 'approved' to a1\n"
    status, out, _ = sagalog(capsys, "list")
    assert out.splitlines()[0].split() == ["ID", "WORKFLOW", "STATUS", "EVENTS"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["a1", "n1"]
    status, out, _ = sagalog(
        capsys, "list", "--workflow", "noop_saga", "--status", "completed", "--since", "10m", "--json"
    )
    assert [row["id"] for row in json.loads(out)] == ["n1"]


def test_cancel_and_empty_list(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert sagalog(capsys, "list")[1] == "no instances\n"
    sagalog(capsys, "start", "approval", "x", "--id", "c1")
    status, out, _ = sagalog(capsys, "cancel", "c1", "--reason", "typo")
    assert (status, out) == (0, "asked c1 to cancel (typo); it compensates what it did\n")
    status, out, _ = sagalog(capsys, "status", "c1")
    assert "cancel requested: typo" in out


def test_cancel_of_an_ended_instance_says_nothing_changed(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chaos_workflows import noop_saga  # tools/, on the path by conftest.py

    import sagalog as api

    api.run(noop_saga, 1, id="done-1", url=db)
    status, out, _ = sagalog(capsys, "cancel", "done-1")
    assert (status, out) == (0, "done-1 had already ended (completed); nothing changed\n")
    status, out, _ = sagalog(capsys, "cancel", "done-1", "--json")
    assert json.loads(out) == {"id": "done-1", "cancel_requested": None, "status": "completed"}
    assert "cancel requested" not in sagalog(capsys, "status", "done-1")[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "nope"], "sagalog: error: unknown workflow 'nope': registered workflows are "),
        (["status", "ghost"], "sagalog: error: no "),
        (["start", "noop_saga", "1", "--session", "ghost"],
         "sagalog: error: no session 'ghost' in namespace 'default'"),
        (["signal", "ghost", "go"], "sagalog: error: no "),
        (["list", "--status", "done"], "sagalog: error: unknown status 'done': use one of running"),
        (["list", "--since", "yesterday"], "sagalog: error: --since 'yesterday' is neither an ISO time"),
        (["worker", "no_such_module_here"],
         "sagalog: error: cannot import workflow module 'no_such_module_here' (is its directory"),
        (["worker", "chaos_workflows", "--concurrency", "0"],
         "sagalog: error: concurrency must be at least 1, not 0"),
    ],
)
def test_bad_inputs(db: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    status, out, err = sagalog(capsys, *argv)
    assert status == 1 and out == ""
    assert err.startswith(message), err


def test_start_refuses_arguments_that_do_not_fit_the_workflow_and_stores_nothing(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = ["-m", "sagalog.demo_workflows"]
    status, out, err = sagalog(
        capsys, "start", "demo.place_order", '{"order_id": "1", "item": "kettle", "card": "4242"}', *module
    )
    assert status == 1 and out == ""
    assert err == (
        "sagalog: error: argument 'order' of 'demo.place_order' does not fit its type Order: "
        "Object missing required field `amount_cents`\n"
    )
    wrong = '{"order_id": "1", "item": "k", "amount_cents": "ten", "card": "4"}'
    status, out, err = sagalog(capsys, "start", "demo.place_order", wrong, *module)
    assert status == 1
    assert err.endswith("does not fit its type Order: Expected `int`, got `str` - at `$.amount_cents`\n")
    status, out, _ = sagalog(capsys, "list", "--json")
    assert status == 0 and json.loads(out) == []


def test_worker_without_a_database_url_uses_the_embedded_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGALOG_DB", raising=False)
    monkeypatch.setenv("SAGALOG_MODULES", "chaos_workflows")
    assert sagalog(capsys, "start", "noop_saga", "2", "--id", "e1")[0] == 0
    assert (tmp_path / ".sagalog" / "journal.db").exists()


def test_waiting_for_a_saga_that_compensates_reports_it(
    worker: object, capsys: pytest.CaptureFixture[str]
) -> None:
    order = '{"id": "f1", "fail_at": "charge"}'
    status, out, err = sagalog(capsys, "start", "chaos_order", order, "--id", "f1", "--wait", "30")
    assert (status, out) == (1, "")
    assert err.startswith("sagalog: error: workflow 'f1' ended compensated: ")
    assert "charge declined for order f1" in err
