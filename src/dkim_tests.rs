use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, UnparsedPublicKey};

use super::*;

const RSA_PKCS8: &[u8] = include_bytes!("testdata/dkim-rsa2048.pem");
const RSA_PKCS1: &[u8] = include_bytes!("testdata/dkim-rsa2048-pkcs1.pem");
const ED25519: &[u8] = include_bytes!("testdata/dkim-ed25519.pem");

/// RFC 8463 Appendix A: the Ed25519 key, message and signature.
const RFC8463_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const RFC8463_PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const RFC8463_MESSAGE: &str = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
d=football.example.com; i=@football.example.com;\r\n \
q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
subject : date : message-id : from : subject : date;\r\n \
bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n \
b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n \
Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n\
From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie Q <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\
\r\n\
Hi.\r\n\
\r\n\
We lost the game.  Are you hungry yet?\r\n\
\r\n\
Joe.\r\n";

const MESSAGE: &[u8] = b"From: <tlsrpt@sender.example>\r\n\
To: <reports@example.com>\r\n\
Subject: Report Domain: example.com Submitter: sender.example\r\n \
Report-ID: <20261207.example.com@sender.example>\r\n\
Date: Tue, 8 Dec 2026 12:00:00 +0000\r\n\
TLS-Report-Domain: example.com\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain\r\n\
\r\n\
A   body  with \t spaces \r\n\
\r\n\
\r\n";

/// A verifier written from RFC 6376 §6.1.3 for these tests: the message's
/// first DKIM-Signature checked with `public` (the raw key: RSAPublicKey
/// DER, or the 32 Ed25519 octets). Returns the signature's tags.
fn verify(message: &[u8], public: &[u8]) -> Result<Vec<(String, String)>, String> {
    let (fields, body) = split_message(message);
    let signature_field = fields
        .iter()
        .find(|f| field_name(f).eq_ignore_ascii_case("dkim-signature"))
        .ok_or("no signature")?;
    let text = std::str::from_utf8(signature_field).map_err(|e| e.to_string())?;
    let value = &text[text.find(':').ok_or("no colon")? + 1..];
    let tags: Vec<(String, String)> = value
        .split(';')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            (k.trim().to_owned(), v)
        })
        .collect();
    let tag = |name: &str| {
        tags.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or(format!("no {name}= tag"))
    };
    if tags.iter().any(|(k, _)| k == "l") {
        return Err("l= must not be used".into());
    }
    let body_hash = digest::digest(&digest::SHA256, &relaxed_body(body));
    if STANDARD.encode(body_hash) != tag("bh")? {
        return Err("body hash mismatch".into());
    }
    // Header fields named in h=, each taken from the bottom up.
    let mut used = vec![false; fields.len()];
    let mut data = Vec::new();
    for name in tag("h")?.split(':') {
        let found = (0..fields.len())
            .rev()
            .find(|&i| !used[i] && field_name(fields[i]).eq_ignore_ascii_case(name));
        if let Some(i) = found {
            used[i] = true;
            data.extend(relaxed_header(fields[i]));
        }
    }
    // The signature field with b='s value removed (§3.5: the value,
    // not the tag).
    let colon = text.find(':').ok_or("no colon")? + 1;
    let mut stripped = text[..colon].to_owned();
    for (i, segment) in text[colon..].split(';').enumerate() {
        if i > 0 {
            stripped.push(';');
        }
        match segment.trim_start().strip_prefix("b=") {
            Some(value) => stripped.push_str(&segment[..segment.len() - value.len()]),
            None => stripped.push_str(segment),
        }
    }
    let mut canonical = relaxed_header(stripped.trim_end_matches("\r\n").as_bytes());
    canonical.truncate(canonical.len() - 2);
    data.extend(canonical);

    let signature_bytes = STANDARD.decode(tag("b")?).map_err(|e| e.to_string())?;
    let result = match tag("a")?.as_str() {
        "rsa-sha256" => UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public)
            .verify(&data, &signature_bytes),
        "ed25519-sha256" => UnparsedPublicKey::new(&signature::ED25519, public).verify(
            digest::digest(&digest::SHA256, &data).as_ref(),
            &signature_bytes,
        ),
        other => return Err(format!("algorithm {other}")),
    };
    result.map_err(|_| "bad signature".to_owned())?;
    Ok(tags)
}

#[test]
fn the_rfc_8463_example_verifies_with_this_canonicalization() {
    let public = STANDARD.decode(RFC8463_PUBLIC).expect("base64");
    let tags = verify(RFC8463_MESSAGE.as_bytes(), &public).expect("RFC 8463 A.3 verifies");
    assert!(tags
        .iter()
        .any(|(k, v)| k == "d" && v == "football.example.com"));
    // A changed body or signed field no longer verifies.
    let tampered = RFC8463_MESSAGE.replace("hungry", "thirsty");
    assert_eq!(
        verify(tampered.as_bytes(), &public),
        Err("body hash mismatch".into())
    );
    let tampered = RFC8463_MESSAGE.replace("Is dinner", "Is lunch");
    assert_eq!(
        verify(tampered.as_bytes(), &public),
        Err("bad signature".into())
    );
}

#[test]
fn signing_with_the_rfc_8463_key_verifies() {
    let seed = STANDARD.decode(RFC8463_SEED).expect("base64");
    let public = STANDARD.decode(RFC8463_PUBLIC).expect("base64");
    let pair = Ed25519KeyPair::from_seed_and_public_key(&seed, &public).expect("RFC key");
    let key = SigningKey(Key::Ed25519(pair));
    let message = RFC8463_MESSAGE
        .split_once("From: ")
        .map(|(_, m)| format!("From: {m}"));
    let message = message.expect("has From");
    let signer = Signer {
        domain: "football.example.com",
        selector: "brisbane",
        key: &key,
    };
    let signed = signer
        .sign(
            message.as_bytes(),
            &REPORT_HEADERS,
            1_528_637_909,
            &SystemRandom::new(),
        )
        .expect("signs");
    let tags = verify(&signed, &public).expect("verifies");
    let tag = |name: &str| {
        tags.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // Same body, same body hash as the RFC's.
    assert_eq!(
        tag("bh"),
        Some("2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
    );
    assert_eq!(tag("a"), Some("ed25519-sha256"));
    assert_eq!(tag("c"), Some("relaxed/relaxed"));
    assert_eq!(tag("t"), Some("1528637909"));
    // Present fields once each plus one more; absent ones once.
    assert_eq!(
        tag("h"),
        Some(
            "from:from:to:to:subject:subject:date:date:message-id:message-id:\
             mime-version:content-type:tls-report-domain:tls-report-submitter:\
             tls-required:auto-submitted"
        )
    );
    // Ed25519 is deterministic: the same input signs the same.
    let again = signer
        .sign(
            message.as_bytes(),
            &REPORT_HEADERS,
            1_528_637_909,
            &SystemRandom::new(),
        )
        .expect("signs");
    assert_eq!(signed, again);
}

#[test]
fn keys_load_from_pem() {
    let cases: [(&str, &[u8], &str); 3] = [
        ("RSA PKCS#8", RSA_PKCS8, "rsa-sha256"),
        ("RSA PKCS#1", RSA_PKCS1, "rsa-sha256"),
        ("Ed25519 PKCS#8 v1", ED25519, "ed25519-sha256"),
    ];
    for (what, pem, algorithm) in cases {
        let key = SigningKey::from_pem(pem).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(key.algorithm(), algorithm, "{what}");
        assert!(!format!("{key:?}").contains("PRIVATE"), "{what}");
    }
    let rsa = SigningKey::from_pem(RSA_PKCS8).expect("loads");
    let pkcs1 = SigningKey::from_pem(RSA_PKCS1).expect("loads");
    assert_eq!(
        rsa.dns_record(),
        pkcs1.dns_record(),
        "one key, two encodings"
    );
    assert!(rsa
        .dns_record()
        .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    let ed = SigningKey::from_pem(ED25519).expect("loads");
    let p = ed.dns_record();
    let p = p
        .strip_prefix("v=DKIM1; k=ed25519; p=")
        .expect("ed25519 record");
    assert_eq!(STANDARD.decode(p).map(|k| k.len()), Ok(32));

    assert_eq!(SigningKey::from_pem(b"").err(), Some(KeyError::NoKey));
    assert_eq!(
        SigningKey::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .err(),
        Some(KeyError::NoKey)
    );
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    assert!(
        matches!(
            SigningKey::from_pem(ec.serialize_pem().as_bytes()),
            Err(KeyError::Rejected(_))
        ),
        "an EC PKCS#8 key is neither RSA nor Ed25519"
    );
    let sec1 = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    assert_eq!(
        SigningKey::from_pem(sec1).err(),
        Some(KeyError::Unsupported)
    );
}

#[test]
fn rsa_signatures_verify_and_break_when_the_message_changes() {
    for pem in [RSA_PKCS8, ED25519] {
        let key = SigningKey::from_pem(pem).expect("loads");
        let record = key.dns_record();
        let p = record.rsplit_once("p=").map(|(_, p)| p).expect("p=");
        let mut public = STANDARD.decode(p).expect("base64");
        if key.algorithm() == "rsa-sha256" {
            // ring verifies the RSAPublicKey inside the SPKI: skip the
            // 24-octet SPKI header of a 2048-bit key.
            public = public[24..].to_vec();
        }
        let signer = Signer {
            domain: "sender.example",
            selector: "tlsrpt2026",
            key: &key,
        };
        let signed = signer
            .sign(
                MESSAGE,
                &REPORT_HEADERS,
                1_796_688_000,
                &SystemRandom::new(),
            )
            .expect("signs");
        assert!(
            signed.ends_with(MESSAGE),
            "the message follows the signature unchanged"
        );
        let text = String::from_utf8(signed.clone()).expect("ASCII");
        let header = &text[..text.len() - MESSAGE.len()];
        for line in header.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 78, "folded: {line:?}");
        }
        assert!(!header.contains(" l="), "{header}");
        verify(&signed, &public).unwrap_or_else(|e| panic!("{}: {e}\n{text}", key.algorithm()));

        // Relaxed: whitespace changes inside lines and extra empty lines
        // at the end do not matter; a changed word does.
        let reflowed = text.replace("A   body  with", "A body with") + "\r\n\r\n";
        verify(reflowed.as_bytes(), &public).expect("relaxed body");
        let refolded = text.replace(
            "TLS-Report-Domain: example.com",
            "tls-report-domain:\r\n\texample.com ",
        );
        verify(refolded.as_bytes(), &public).expect("relaxed header");
        let changed = text.replace("A   body", "A   bodY");
        assert_eq!(
            verify(changed.as_bytes(), &public),
            Err("body hash mismatch".into())
        );
        let added = text.replace("MIME-Version", "Subject: added\r\nMIME-Version");
        assert_eq!(
            verify(added.as_bytes(), &public),
            Err("bad signature".into()),
            "oversigning catches an added Subject"
        );
    }
}

#[test]
fn what_cannot_be_signed() {
    let key = SigningKey::from_pem(ED25519).expect("loads");
    let signer = |domain, selector| Signer {
        domain,
        selector,
        key: &key,
    };
    let rng = SystemRandom::new();
    assert_eq!(
        signer("sender.example", "s").sign(b"To: <a@b>\r\n\r\nbody\r\n", &REPORT_HEADERS, 0, &rng),
        Err(SignError::NoFrom)
    );
    for (domain, selector) in [
        ("", "s"),
        ("sender.example", "a b"),
        ("x;y", "s"),
        ("a..b", "s"),
    ] {
        assert_eq!(
            signer(domain, selector).sign(MESSAGE, &REPORT_HEADERS, 0, &rng),
            Err(SignError::BadName(
                if is_dns_name(domain) {
                    selector
                } else {
                    domain
                }
                .into()
            )),
            "{domain:?} {selector:?}"
        );
    }
}

#[test]
fn canonicalization_follows_rfc_6376_section_3_4_5() {
    // The RFC's own example (§3.4.5), relaxed/relaxed.
    let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
    let (fields, body) = split_message(message);
    let headers: Vec<u8> = fields.iter().flat_map(|f| relaxed_header(f)).collect();
    assert_eq!(String::from_utf8_lossy(&headers), "a:X\r\nb:Y Z\r\n");
    assert_eq!(
        String::from_utf8_lossy(&relaxed_body(body)),
        " C\r\nD E\r\n"
    );
    let bodies: [(&[u8], &[u8]); 6] = [
        (b"", b""),
        (b"\r\n", b""),
        (b"\r\n\r\n", b""),
        (b"x", b"x\r\n"),
        (b"x \r\n \r\n", b"x\r\n"),
        (b"a\nb\r\n", b"a\nb\r\n"),
    ];
    for (body, want) in bodies {
        assert_eq!(
            relaxed_body(body),
            want,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let (fields, body) = split_message(b"Only: headers\r\n");
    assert_eq!((fields.len(), body), (1, &b""[..]));
}
