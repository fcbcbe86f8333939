#!/usr/bin/env python3
"""A scripted SMTP client for the test support's self-tests.

It drives a test server (Postfix as a submission relay) the way a real
client would, step by step, and prints what the server answered, so a test
proves what the server does without postman. The plan is one JSON argument:

    {"connect": "ip:port", "source": "127.0.0.2" or null,
     "implicit_tls": false, "cafile": "cert.pem", "server_name": "relay.test",
     "steps": [["ehlo", "client.test"], ["starttls"],
               ["auth", "PLAIN", "user", "password"],
               ["cmd", "MAIL FROM:<a@src.test>"], ["data", "Subject: x\\r\\n\\r\\nx\\r\\n"],
               ["quit"]]}

"source" binds the client's socket to that local address first. With
"implicit_tls" the connection is TLS from its first byte (RFC 8314); with
"starttls" it becomes TLS after a 220. TLS verifies the server's
certificate against "cafile" and "server_name", as a careful client does.

Mechanisms: PLAIN (initial response, RFC 4616), LOGIN (two 334 rounds) and
SCRAM-SHA-256 (RFC 5802/7677, without channel binding: "n,,"), whose server
signature is checked; a server that sends its final message as a 334
challenge gets the empty response RFC 4954 asks for.

Output, one JSON object on stdout: {"greeting": [lines], "steps":
[{"step": "ehlo", "replies": [[lines], ...]}, ...], "closed": null or why}.
Each step lists every reply it got (AUTH may take several). When the
server closes the connection, the remaining steps are not run and "closed"
says so; the exit status is 0 whatever the server answered.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import sys


class Closed(Exception):
    pass


class Client:
    def __init__(self, plan):
        host, port = plan["connect"].rsplit(":", 1)
        source = (plan["source"], 0) if plan.get("source") else None
        self.sock = socket.create_connection((host, int(port)), timeout=20, source_address=source)
        self.context = None
        if plan.get("cafile"):
            self.context = ssl.create_default_context(cafile=plan["cafile"])
        self.server_name = plan.get("server_name")
        if plan.get("implicit_tls"):
            self.wrap()
        self.file = self.sock.makefile("rb")

    def wrap(self):
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.server_name)
        self.file = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise Closed("connection closed by the server")
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def command(self, line):
        self.send(line)
        return self.reply()


def b64(data):
    return base64.b64encode(data).decode()


def auth(client, mech, user, password):
    mech = mech.upper()
    if mech == "PLAIN":
        return [client.command("AUTH PLAIN " + b64(b"\0" + user.encode() + b"\0" + password.encode()))]
    if mech == "LOGIN":
        replies = [client.command("AUTH LOGIN")]
        for value in (user, password):
            if not replies[-1][0].startswith("334"):
                break
            client.send(b64(value.encode()))
            replies.append(client.reply())
        return replies
    if mech == "SCRAM-SHA-256":
        return scram(client, user, password)
    return [client.command("AUTH " + mech)]


def scram(client, user, password):
    nonce = b64(os.urandom(18))
    name = user.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={name},r={nonce}"
    replies = [client.command("AUTH SCRAM-SHA-256 " + b64(("n,," + first_bare).encode()))]
    if not replies[-1][0].startswith("334 "):
        return replies
    server_first = base64.b64decode(replies[-1][0][4:]).decode()
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise ValueError("SCRAM server nonce does not extend ours: " + server_first)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = "c=biws,r=" + fields["r"]
    message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    client.send(b64((final_bare + ",p=" + b64(proof)).encode()))
    replies.append(client.reply())
    if replies[-1][0].startswith("334 "):
        server_final = base64.b64decode(replies[-1][0][4:]).decode()
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = "v=" + b64(hmac.new(server_key, message, "sha256").digest())
        if server_final != expected:
            raise ValueError("SCRAM server signature is wrong: " + server_final)
        replies.append(client.command(""))
    return replies


def data(client, content):
    replies = [client.command("DATA")]
    if replies[-1][0].startswith("354"):
        lines = content.replace("\r\n", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        body = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
        client.sock.sendall(body.encode() + b".\r\n")
        replies.append(client.reply())
    return replies


def step(client, kind, args):
    if kind == "ehlo":
        return [client.command("EHLO " + args[0])]
    if kind == "starttls":
        reply = client.command("STARTTLS")
        if reply[0].startswith("220"):
            client.wrap()
        return [reply]
    if kind == "auth":
        return auth(client, *args)
    if kind == "cmd":
        return [client.command(args[0])]
    if kind == "data":
        return data(client, args[0])
    if kind == "quit":
        return [client.command("QUIT")]
    raise ValueError("unknown step " + kind)


def main():
    plan = json.loads(sys.argv[1])
    out = {"greeting": None, "steps": [], "closed": None}
    client = Client(plan)
    try:
        out["greeting"] = client.reply()
        for kind, *args in plan["steps"]:
            out["steps"].append({"step": kind, "replies": step(client, kind, args)})
    except (Closed, ConnectionError) as e:
        out["closed"] = str(e)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
