"""The HTTP server itself (anyio + h11) and the page's static files."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from console_helpers import Http
from sagalog.engine.console import Console, HttpServer, Request, Response
from sagalog.storage import connect

pytestmark = pytest.mark.anyio


async def test_static_files_have_their_content_types(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>sagalog</title>")
    (tmp_path / "app.js").write_text("export {};")
    (tmp_path / "style.css").write_text("body {}")
    (tmp_path / "notes.bin").write_bytes(b"\x00")
    journal = await connect("memory://")
    server = HttpServer(Console(journal, static_dir=tmp_path))
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        http = Http(port)
        index = await http.get("/")
        assert index.status == 200 and index.body.startswith(b"<!doctype html>")
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert (await http.get("/static/app.js")).headers["content-type"] == "text/javascript; charset=utf-8"
        assert (await http.get("/static/style.css")).headers["content-type"] == "text/css; charset=utf-8"
        for path in [
            "/static/missing.js",
            "/static/notes.bin",
            "/static/..%2Fconftest.py",
            "/static/.hidden",
        ]:
            reply = await http.get(path)
            assert reply.status == 404, path
            assert reply.error[0] == "not_found"
        assert (await http.post("/static/app.js", {})).status == 405
        await http.close()
        tg.cancel_scope.cancel()
    await journal.close()


async def test_malformed_http_and_handler_failures_get_json_errors() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return Response(200, request.body)

    server = HttpServer(handler, max_body=10)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        http = Http(port)
        boom = await http.get("/boom")
        assert boom.status == 500
        assert boom.error == ("internal_error", "the server failed to answer; see its log")
        echo = await http.post("/echo", raw=b"0123456789")
        assert (echo.status, echo.body) == (200, b"0123456789")  # exactly the limit is fine
        await http.close()
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        with anyio.fail_after(10):
            while True:
                try:
                    answer += await stream.receive()
                except anyio.EndOfStream:
                    break
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b'"code":"bad_request"' in answer and b"malformed HTTP request" in answer
        chunked = await anyio.connect_tcp("127.0.0.1", port)
        await chunked.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n"
        )
        with anyio.fail_after(10):
            reply = await chunked.receive()
        await chunked.aclose()
        assert reply.startswith(b"HTTP/1.1 413 ") and b"body_too_large" in reply
        tg.cancel_scope.cancel()
