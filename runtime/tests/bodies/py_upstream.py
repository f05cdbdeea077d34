"""An upstream that reads request bodies the way FastAPI-style services do: json.loads(bytes).

Answers every POST with what it read for the facts the test policy uses, as JSON:
{"ok": true, "facts": {"max_tokens": ["value", 9000] | ["absent"], ...}} or {"ok": false}.
Usage: python3 py_upstream.py PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FACTS = ["max_tokens", "model", "stream"]


def readings(raw):
    try:
        body = json.loads(raw)  # bytes: detects UTF-8 (with BOM), UTF-16 and UTF-32
    except (ValueError, RecursionError):
        return {"ok": False}
    if not isinstance(body, dict):
        return {"ok": False}
    facts = {f: (["value", body[f]] if f in body else ["absent"]) for f in FACTS}
    try:
        json.dumps(facts, allow_nan=False)
    except ValueError:
        return {"ok": True, "facts": None, "unrepresentable": True}
    return {"ok": True, "facts": facts}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    posts = 0

    def do_GET(self):
        self.answer({"posts": Handler.posts})

    def do_POST(self):
        Handler.posts += 1
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.answer(readings(raw))

    def answer(self, value):
        out = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
