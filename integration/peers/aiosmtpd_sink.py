#!/usr/bin/env python3
"""A real third-party SMTP server for postman's end-to-end tests.

Runs aiosmtpd (a reference asyncio SMTP server) bound to --host/--port and
saves every accepted message as one JSON file in --dir:

    {"mail_from": "...", "rcpt_tos": ["..."], "peer": "ip:port",
     "helo": "...", "data_b64": "<base64 of the DATA content>",
     "mail_options": ["SIZE=123", ...], "tls": null or
     {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
     "after_mail_b64": "<base64 of the input already buffered when MAIL
     was handled>"}

With --tls-cert and --tls-key, STARTTLS is offered (aiosmtpd's
tls_context). With --pipelining, the EHLO reply also advertises PIPELINING
(aiosmtpd reads commands from a buffered stream, so it handles pipelined
input; it just does not say so by default). "after_mail_b64" shows
pipelining from the server's side: the RCPT commands were already in its
input buffer when it handled MAIL.

The DATA content is exactly what aiosmtpd hands a handler with
decode_data=False: the lines as received, CRLF kept, with the dot-stuffing
removed (RFC 5321 section 4.5.2) and without the final ".\\r\\n" terminator.

Files are written to "<dir>/.tmp-<n>" and renamed to "<dir>/<n>.json", so a
reader never sees half a file. "READY <host>:<port>" is printed on stdout once
the socket is listening. The process exits on SIGTERM or when stdin closes.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError as exc:  # the Rust side turns this into a test failure
    sys.stderr.write(
        "aiosmtpd is not installed for %s (%s): run `%s -m pip install aiosmtpd`\n"
        % (sys.executable, exc, sys.executable)
    )
    sys.exit(3)


class SaveHandler:
    """Saves each message; RCPT is accepted by aiosmtpd's defaults."""

    def __init__(self, out_dir, pipelining):
        self.out_dir = out_dir
        self.pipelining = pipelining
        self.counter = itertools.count(1)
        self.after_mail = {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What the client sent after MAIL without waiting for its reply.
        buffered = bytes(getattr(server._reader, "_buffer", b""))
        self.after_mail[id(session)] = buffered
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        peer = session.peer
        mail_from = envelope.mail_from
        if mail_from == "<>":  # aiosmtpd keeps the brackets of the null sender
            mail_from = ""
        tls = None
        if session.ssl:
            obj = session.ssl.get("ssl_object")
            cipher = session.ssl.get("cipher")
            peer_cert = obj.getpeercert() if obj is not None else None
            tls = {
                "version": obj.version() if obj is not None else None,
                "cipher": cipher[0] if cipher else None,
                # The DNS names of the client's certificate, when it sent
                # one (only asked for with --tls-client-ca).
                "client_names": [v for (k, v) in peer_cert.get("subjectAltName", ()) if k == "DNS"]
                if peer_cert
                else [],
            }
        record = {
            "tls": tls,
            "mail_options": list(envelope.mail_options),
            "after_mail_b64": base64.b64encode(
                self.after_mail.pop(id(session), b"")
            ).decode("ascii"),
            "mail_from": mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": "%s:%s" % (peer[0], peer[1]) if isinstance(peer, tuple) else str(peer),
            "helo": session.host_name,
            "data_b64": base64.b64encode(bytes(envelope.original_content)).decode("ascii"),
        }
        tmp = os.path.join(self.out_dir, ".tmp-%06d" % n)
        final = os.path.join(self.out_dir, "%06d.json" % n)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        return "250 2.0.0 OK saved as %06d" % n


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--hostname", default="sink.test")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--pipelining", action="store_true")
    parser.add_argument("--tls-client-ca", help="require a client certificate issued by these roots")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            tls_context.verify_mode = ssl.CERT_REQUIRED
            tls_context.load_verify_locations(cafile=args.tls_client_ca)
    handler = SaveHandler(args.dir, args.pipelining)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname=args.hostname,
            timeout=30,
            tls_context=tls_context,
        ),
        host=args.host,
        port=args.port,
        reuse_address=True,
    )

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The parent holds our stdin: when it dies without killing us, stdin
    # reaches EOF and we leave instead of lingering as an orphan.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)

    print("READY %s:%d" % (args.host, args.port), flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
