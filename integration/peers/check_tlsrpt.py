#!/usr/bin/env python3
"""Checks one TLS report mail (RFC 8460 section 5.3) with tools independent
of postman: dkimpy verifies its DKIM signature (RFC 6376, RFC 8463),
Python's email package parses it, and jsonschema validates the gzipped
report against integration/peers/tlsrpt-schema.json (RFC 8460 section
4.4).

Usage: check_tlsrpt.py SCHEMA DKIM_TXT < message

DKIM_TXT is the key record the signature's <s>._domainkey.<d> would
publish; no DNS server is asked. Prints one JSON object:

    {"dkim": bool, "dkim_error": str or null, "dkim_tags": {tag: value}, "defects": [...],
     "headers": [[name, value]], "content_type", "report_type",
     "parts": [{"content_type", "filename"}], "text",
     "report": the decoded JSON or null, "schema_errors": [...],
     "count_errors": [...]}
"""

import base64
import email
import email.parser
import email.policy
import gzip
import json
import re
import sys

import dkim
import jsonschema


def all_defects(msg):
    found = [repr(d) for d in msg.defects]
    if msg.is_multipart():
        for part in msg.get_payload():
            found.extend(all_defects(part))
    return found


def signature_tags(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = msg.get("DKIM-Signature")
    if value is None:
        return {}
    tags = {}
    for item in re.sub(r"\s+", "", str(value)).split(";"):
        if "=" in item:
            name, _, val = item.partition("=")
            tags[name] = val
    return tags


def count_errors(report):
    """What the schema cannot say: the failure total is the sum of the
    failure details."""
    errors = []
    for i, entry in enumerate(report.get("policies", [])):
        details = entry.get("failure-details", [])
        total = sum(d.get("failed-session-count", 0) for d in details)
        said = entry.get("summary", {}).get("total-failure-session-count")
        if total != said:
            errors.append(f"policies[{i}]: total-failure-session-count {said} != {total}")
    return errors


def main():
    schema_path, txt = sys.argv[1], sys.argv[2]
    raw = sys.stdin.buffer.read()

    def dnsfunc(name, timeout=5):
        return txt.encode()

    # dkimpy raises, rather than fails, on some mismatches (a key record of
    # another algorithm): both are a signature that does not verify.
    try:
        ok, dkim_error = dkim.verify(raw, dnsfunc=dnsfunc), None
    except Exception as e:  # noqa: BLE001
        ok, dkim_error = False, repr(e)
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    out = {
        "dkim": bool(ok),
        "dkim_error": dkim_error,
        "dkim_tags": signature_tags(raw),
        "defects": all_defects(msg),
        "headers": [[n, str(v)] for n, v in msg.items()],
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "parts": [],
        "text": None,
        "report": None,
        "schema_errors": [],
        "count_errors": [],
    }
    for part in msg.iter_parts():
        out["parts"].append(
            {"content_type": part.get_content_type(), "filename": part.get_filename()}
        )
        if part.get_content_type() == "text/plain":
            out["text"] = part.get_content()
        if part.get_content_type() == "application/tlsrpt+gzip":
            report = json.loads(gzip.decompress(part.get_payload(decode=True)))
            out["report"] = report
            with open(schema_path) as f:
                schema = json.load(f)
            validator = jsonschema.Draft202012Validator(
                schema, format_checker=jsonschema.FormatChecker()
            )
            out["schema_errors"] = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(report)
            ]
            if not out["schema_errors"]:
                out["count_errors"] = count_errors(report)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
