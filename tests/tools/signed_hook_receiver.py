"""A webhook receiver that checks switchyard's signatures the way a team's would.

Usage: signed_hook_receiver.py PORT SECRET_FILE [CERT KEY]   (with CERT and KEY: https)
Answers 200 to a POST whose X-Switchyard-Signature is v1=HMAC-SHA256(secret,
"TIMESTAMP.BODY") with a timestamp within five minutes, 401 otherwise. Prints one JSON
line per POST: {"path", "verified", "event" (header), "body" (parsed)}.
"""
import hashlib
import hmac
import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = open(sys.argv[2], "rb").read().strip()


def verified(headers, body):
    timestamp = headers.get("X-Switchyard-Timestamp", "")
    signature = headers.get("X-Switchyard-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + expected.hexdigest(), signature)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = verified(self.headers, body)
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        print(json.dumps({
            "path": self.path,
            "verified": ok,
            "event": self.headers.get("X-Switchyard-Event"),
            "body": json.loads(body),
        }), flush=True)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
if len(sys.argv) == 5:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
