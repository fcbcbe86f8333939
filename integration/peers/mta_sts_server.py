#!/usr/bin/env python3
"""An MTA-STS policy server for postman's tests: HTTPS on ip:443 (RFC 8461
fixes the port), the stdlib's http.server and ssl only.

It serves the policy file at /.well-known/mta-sts.txt, or misbehaves as
--behaviour says. It prints READY once it listens, then one line per
event on stdout: "CONNECT" when a TCP connection is accepted, "GET <host>
<path>" for each request, "POST <host> <path> <content type> <base64 body>"
for each TLS report posted to it (answered 201). It leaves when its stdin closes.
"""

import argparse
import base64
import http.server
import socket
import ssl
import sys
import threading

BEHAVIOURS = ["ok", "eof-notify", "redirect", "not-found", "html", "oversized", "truncated"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--policy", required=True, help="file with the policy text")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="ok")
    args = parser.parse_args()
    policy = open(args.policy, "rb").read()
    out_lock = threading.Lock()

    def say(line):
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            # A TLS report (RFC 8460 §5.4): its body, base64, on one line.
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            say(
                "POST %s %s %s %s"
                % (
                    self.headers.get("Host", ""),
                    self.path,
                    self.headers.get("Content-Type", ""),
                    base64.b64encode(body).decode("ascii"),
                )
            )
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            say("GET %s %s" % (self.headers.get("Host", ""), self.path))
            if self.path != "/.well-known/mta-sts.txt":
                return self.send_error(404)
            b = args.behaviour
            if b == "redirect":
                self.send_response(301)
                self.send_header("Location", "https://elsewhere.test/.well-known/mta-sts.txt")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif b == "not-found":
                self.send_error(404)
            elif b == "html":
                self.reply(policy, "text/html")
            elif b == "oversized":
                self.reply(policy + b"#" * 70000 + b"\n", "text/plain")
            elif b == "truncated":
                # No length, part of the policy (whole lines, so it still
                # parses), then a TCP close without TLS close_notify.
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                lines = policy.splitlines(keepends=True)
                self.wfile.write(b"".join(lines[: max(1, len(lines) - 1)]))
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif b == "eof-notify":
                # No length: the body ends at TLS close_notify.
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(policy)
                self.wfile.flush()
                try:
                    self.connection.unwrap()
                except (OSError, ValueError):
                    pass
            else:
                self.reply(policy, "text/plain; charset=utf-8")

        def reply(self, body, media):
            self.send_response(200)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):
            sock, addr = self.socket.accept()
            say("CONNECT")
            sock.settimeout(10)
            return ctx.wrap_socket(sock, server_side=True), addr

        def handle_error(self, request, client_address):
            # A refused certificate ends the handshake: nothing to report.
            pass

    try:
        server = Server((args.host, args.port), Handler)
    except OSError as e:
        print("ERROR bind %s:%d: %s" % (args.host, args.port, e), flush=True)
        sys.exit(1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say("READY")
    sys.stdin.read()


if __name__ == "__main__":
    main()
