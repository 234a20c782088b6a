"""A scripted stand-in for an OpenAI-compatible chat server, on 127.0.0.1, for tests and benchmarks.

It judges by a transparent rule: the answer containing "[good]" wins, and neither or both give
[[C]]. Markers in the question script failures: RATE_LIMIT_ONCE (HTTP 429 once), SERVER_ERROR_ONCE
(HTTP 500 once), SLOW_ONCE (one reply slower than the client's timeout), GARBLED (no verdict),
POSITION_BIAS (always [[A]], so the two orders disagree), ALWAYS_500 (never succeeds), and
malformed answers with status 200: HTML_200 (an HTML page), EMPTY_CHOICES (`choices: []`),
ERROR_200 (`{"error": ...}`), each with an _ONCE variant that answers properly on the retry.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SECTION = re.compile(r"\[Answer A\]\n(.*?)\n\[End of answer A\].*?\[Answer B\]\n(.*?)\n\[End of answer B\]", re.S)


class FakeJudgeServer:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 3.0):
        self.latency, self.slow_seconds = latency, slow_seconds
        self.requests = 0
        self.seen: set[tuple[str, str]] = set()
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                status, payload, delay = server.respond(body)
                if delay:
                    time.sleep(delay)
                html = isinstance(payload, str)
                data = payload.encode() if html else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html" if html else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 refuses bursts of concurrent clients

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _once(self, marker: str, content: str) -> bool:
        """True the first time a marker is met for this exact request content."""
        key = (marker, content)
        with self.lock:
            if key in self.seen:
                return False
            self.seen.add(key)
            return True

    def respond(self, body: dict) -> tuple[int, dict | str, float]:
        content = body["messages"][-1]["content"]
        delay = self.latency
        if "ALWAYS_500" in content:
            return 500, {"error": {"message": "scripted failure", "type": "server_error"}}, delay
        if "RATE_LIMIT_ONCE" in content and self._once("429", content):
            return 429, {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}, delay
        if "SERVER_ERROR_ONCE" in content and self._once("500", content):
            return 500, {"error": {"message": "oops", "type": "server_error"}}, delay
        for marker, payload in (("HTML_200", "<html><body>502 Bad Gateway (proxy)</body></html>"),
                                ("EMPTY_CHOICES", {"id": "x", "object": "chat.completion", "choices": []}),
                                ("ERROR_200", {"error": {"message": "model overloaded", "type": "server_error"}})):
            if f"{marker}_ONCE" in content:
                if self._once(marker, content):
                    return 200, payload, delay
            elif marker in content:
                return 200, payload, delay
        if "SLOW_ONCE" in content and self._once("slow", content):
            delay = self.slow_seconds
        m = _SECTION.search(content)
        a, b = (m.group(1), m.group(2)) if m else ("", "")
        if "GARBLED" in content:
            text = "Both answers have merits; I cannot decide."
        elif "POSITION_BIAS" in content:
            text = "The first answer is better. [[A]]"
        else:
            wins_a, wins_b = "[good]" in a, "[good]" in b
            verdict = "A" if wins_a and not wins_b else "B" if wins_b and not wins_a else "C"
            text = f"Comparing the two answers on helpfulness.\n[[{verdict}]]"
        reply = {
            "id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(content.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(content.split()) + len(text.split())},
        }
        return 200, reply, delay
