"""A small OpenAI-compatible chat-completions server for the tests (127.0.0.1, canned replies).

Each POST /v1/chat/completions takes the next step of the script:
``{"content": "..."}`` (HTTP 200 with that message), ``{"status": 429}`` / ``{"status": 500}``
(an error), ``{"sleep": s, "content": ...}`` (answers after ``s`` seconds). When the script is
used up it answers ``default``. Every request is counted and its body kept.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = json.dumps([
    {"expression": "E + A/N**alpha + B/D**beta", "parameters": ["E", "A", "alpha", "B", "beta"]},
    {"expression": "E + (A/N**alpha + B/D**beta)**g", "parameters": ["E", "A", "alpha", "B", "beta", "g"]},
])


class FakeLLM:
    def __init__(self, script=None, default=None):
        self.script = list(script or [])
        self.default = {"content": GOOD} if default is None else default
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "any", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n) or b"{}")
                with fake.lock:
                    fake.requests.append(req)
                    step = fake.script.pop(0) if fake.script else fake.default
                if step.get("sleep"):
                    time.sleep(step["sleep"])
                if step.get("status", 200) != 200:
                    self._send(step["status"], {"error": {"message": "scripted error", "type": "server_error"}})
                    return
                content = step["content"]
                prompt_tokens = sum(len(m.get("content", "")) for m in req.get("messages", [])) // 4
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": req.get("model", "any"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                              "total_tokens": prompt_tokens + len(content) // 4}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False


if __name__ == "__main__":  # run by hand: python tests/llm_server.py ['JSON reply']
    import sys

    with FakeLLM(default={"content": sys.argv[1]} if len(sys.argv) > 1 else None) as s:
        print(s.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
