#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the end-to-end
# tests need: Python 3 with aiosmtpd and Postfix (the third-party SMTP servers
# they deliver to; the interop tests run private Postfix instances, never the
# system's), Cyrus SASL's tools for Postfix's SMTP AUTH, dkimpy and
# jsonschema, which judge postman's TLS reports, and NSD, ldnsutils and
# Unbound for real DNSSEC in the DANE tests. Arguments go
# to `cargo test`, e.g. `scripts/test.sh -p postman-integration`.
# POSTMAN_TEST_PYTHON picks the interpreter (default python3); the tests use
# the same variable.
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${POSTMAN_TEST_PYTHON:-python3}"
as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    if as_root_with_apt; then
        echo "scripts/test.sh: $PYTHON not found; installing python3 with apt-get" >&2
        apt-get update -qq
        apt-get install -y -qq python3 python3-pip >/dev/null
    else
        echo "scripts/test.sh: $PYTHON not found; the end-to-end tests need Python 3" >&2
        exit 1
    fi
fi

has_aiosmtpd() { "$PYTHON" -c 'import aiosmtpd' >/dev/null 2>&1; }

if ! has_aiosmtpd; then
    echo "scripts/test.sh: installing aiosmtpd for $PYTHON" >&2
    pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" aiosmtpd; }
    # A Debian python3 refuses plain pip installs (PEP 668) and may lack pip;
    # try pip, then pip past PEP 668, then Debian's package.
    if ! pip_install 2>/dev/null && ! pip_install --break-system-packages; then
        if as_root_with_apt; then
            apt-get update -qq
            apt-get install -y -qq python3-aiosmtpd >/dev/null || true
        fi
    fi
    if ! has_aiosmtpd; then
        echo "scripts/test.sh: could not install aiosmtpd for $PYTHON" >&2
        exit 1
    fi
fi

# The TLS report checks (integration/peers/check_tlsrpt.py): dkimpy verifies
# the reports' DKIM signatures (PyNaCl for Ed25519) and jsonschema checks
# the report against RFC 8460's schema. Same order of attempts as aiosmtpd.
has_report_checkers() { "$PYTHON" -c 'import dkim, nacl, jsonschema' >/dev/null 2>&1; }

if ! has_report_checkers; then
    echo "scripts/test.sh: installing dkimpy, pynacl and jsonschema for $PYTHON" >&2
    pip_report() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" dkimpy pynacl jsonschema; }
    if ! pip_report 2>/dev/null && ! pip_report --break-system-packages; then
        if as_root_with_apt; then
            apt-get update -qq
            apt-get install -y -qq python3-dkim python3-nacl python3-jsonschema >/dev/null || true
        fi
    fi
    if ! has_report_checkers; then
        echo "scripts/test.sh: could not install dkimpy, pynacl and jsonschema for $PYTHON" >&2
        exit 1
    fi
fi

# Postfix's smtpd: the interop tests start private instances from their own
# config directories (as root, like CI). Installed without configuring a
# system mail server ("No configuration"), and never started here.
has_postfix() { [ -x /usr/lib/postfix/sbin/master ] && command -v postfix >/dev/null 2>&1; }

if ! has_postfix; then
    if as_root_with_apt; then
        echo "scripts/test.sh: installing postfix" >&2
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
    fi
    if ! has_postfix; then
        echo "scripts/test.sh: could not install postfix (the interop tests need it)" >&2
        exit 1
    fi
fi

# Cyrus SASL for the routing tests' Postfix, a submission relay that takes
# mail only from clients that authenticate: saslpasswd2 (sasl2-bin) makes
# each test's user database, and libsasl2-modules holds the PLAIN, LOGIN,
# SCRAM and sasldb plugins smtpd loads (a Recommends of libsasl2-2, which
# a machine installing without recommends lacks).
has_sasl() {
    [ -x /usr/sbin/saslpasswd2 ] && compgen -G "/usr/lib/*/sasl2/libscram.so*" >/dev/null &&
        compgen -G "/usr/lib/*/sasl2/libsasldb.so*" >/dev/null
}

if ! has_sasl; then
    if as_root_with_apt; then
        echo "scripts/test.sh: installing sasl2-bin and libsasl2-modules" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sasl2-bin libsasl2-modules >/dev/null
    fi
    if ! has_sasl; then
        echo "scripts/test.sh: could not install sasl2-bin and libsasl2-modules (the routing tests need them)" >&2
        exit 1
    fi
fi

# DNSSEC for the DANE tests: NSD serves zones signed with ldns-signzone
# (ldnsutils) and Unbound validates them; each test starts private
# instances on loopback ports from its own config (never the system's:
# the packages' services are not started here).
has_dnssec_tools() {
    [ -x /usr/sbin/nsd ] && [ -x /usr/sbin/unbound ] && command -v ldns-signzone >/dev/null 2>&1 &&
        command -v ldns-keygen >/dev/null 2>&1
}

if ! has_dnssec_tools; then
    if as_root_with_apt; then
        echo "scripts/test.sh: installing nsd, ldnsutils and unbound" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsd ldnsutils unbound >/dev/null
    fi
    if ! has_dnssec_tools; then
        echo "scripts/test.sh: could not install nsd, ldnsutils and unbound (the DANE tests need them)" >&2
        exit 1
    fi
fi

exec cargo test --workspace "$@"
