#!/usr/bin/env python3
"""Parses one delivery status notification (RFC 3464) with Python's own
MIME parser and prints what the tests assert on, as JSON.

Reads the message from stdin; prints one JSON object:

    {"content_type", "report_type", "subject", "to", "cte", "defects",
     "parts": [{"content_type", "cte"}], "text",
     "per_message": [[name, value]], "recipients": [[[name, value]]],
     "returned": {"content_type", "headers": [[name, value]],
                  "body_b64"}}

"returned" describes the third part: for message/rfc822 the embedded
message's header fields and its body's octets; for text/rfc822-headers the
header fields it lists. Every defect the parser noticed, in any part, is
listed in "defects" (it should be empty).
"""

import base64
import email
import email.parser
import email.policy
import json
import sys


def fields(msg):
    return [[name, str(value)] for name, value in msg.items()]


def all_defects(msg):
    found = [repr(d) for d in msg.defects]
    if msg.is_multipart():
        for part in msg.get_payload():
            found.extend(all_defects(part))
    return found


def main():
    raw = sys.stdin.buffer.read()
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "subject": str(msg["Subject"]),
        "to": str(msg["To"]),
        "cte": msg["Content-Transfer-Encoding"] and str(msg["Content-Transfer-Encoding"]),
        "defects": all_defects(msg),
        "parts": [],
        "text": None,
        "per_message": [],
        "recipients": [],
        "returned": None,
    }
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    for part in parts:
        out["parts"].append(
            {
                "content_type": part.get_content_type(),
                "cte": part["Content-Transfer-Encoding"]
                and str(part["Content-Transfer-Encoding"]),
            }
        )
        ctype = part.get_content_type()
        if ctype == "text/plain" and out["text"] is None:
            out["text"] = part.get_content()
        elif ctype == "message/delivery-status":
            # Python parses each group of fields as a message of its own.
            groups = part.get_payload()
            out["per_message"] = fields(groups[0])
            out["recipients"] = [fields(g) for g in groups[1:]]
        elif ctype == "message/rfc822":
            inner = part.get_payload()[0]
            body = inner.get_payload(decode=True) or b""
            out["returned"] = {
                "content_type": ctype,
                "headers": fields(inner),
                "body_b64": base64.b64encode(body).decode("ascii"),
            }
        elif ctype == "text/rfc822-headers":
            text = part.get_content()
            headers = email.parser.Parser(policy=email.policy.default).parsestr(
                text, headersonly=True
            )
            out["returned"] = {
                "content_type": ctype,
                "headers": fields(headers),
                "body_b64": "",
            }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
