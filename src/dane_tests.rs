use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};
use ring::digest;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};

use super::*;

const ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// A root, an intermediate it signed, and a leaf for `names` the
/// intermediate signed: the chain a server sends is leaf, intermediate,
/// root.
struct Pki {
    root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

fn pki(names: &[&str], leaf_expired: bool) -> Pki {
    let root_key = KeyPair::generate().expect("key");
    let root = CertifiedIssuer::self_signed(ca_params("Test Root"), root_key).expect("root");
    let mid_key = KeyPair::generate().expect("key");
    let mid = CertifiedIssuer::signed_by(ca_params("Test Intermediate"), mid_key, &root)
        .expect("intermediate");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut leaf_params = CertificateParams::new(names).expect("names");
    if leaf_expired {
        leaf_params.not_before = date_time_ymd(2020, 1, 1);
        leaf_params.not_after = date_time_ymd(2021, 1, 1);
    }
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params.signed_by(&leaf_key, &mid).expect("leaf");
    Pki {
        root: root.der().clone(),
        intermediate: mid.der().clone(),
        leaf: leaf.der().clone(),
    }
}

impl Pki {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![
            self.leaf.clone(),
            self.intermediate.clone(),
            self.root.clone(),
        ]
    }
}

fn spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let parsed = webpki::EndEntityCert::try_from(cert).expect("parses");
    parsed.subject_public_key_info().as_ref().to_vec()
}

/// The record of `usage` for `cert` with `selector` and `matching`.
fn tlsa(usage: u8, selector: u8, matching: u8, cert: &CertificateDer<'_>) -> Tlsa {
    let selected = match selector {
        CERT => cert.as_ref().to_vec(),
        _ => spki(cert),
    };
    let data = match matching {
        FULL => selected,
        SHA2_256 => digest::digest(&digest::SHA256, &selected).as_ref().to_vec(),
        _ => digest::digest(&digest::SHA512, &selected).as_ref().to_vec(),
    };
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000))
}

const NAMES: &[&str] = &["mx.example.test", "example.test"];

fn check(records: &[Tlsa], chain: &[CertificateDer<'_>]) -> Result<Matched, DaneError> {
    verify(records, chain, NAMES, now(), ALGORITHMS)
}

#[test]
fn dane_ee_matches_the_leaf_in_every_selector_and_matching_type() {
    let p = pki(&["mx.example.test"], false);
    for selector in [CERT, SPKI] {
        for matching in [FULL, SHA2_256, SHA2_512] {
            let record = tlsa(DANE_EE, selector, matching, &p.leaf);
            assert_eq!(
                check(&[record], &p.chain()),
                Ok(Matched::EndEntity),
                "3 {selector} {matching}"
            );
        }
    }
}

#[test]
fn dane_ee_ignores_names_and_dates() {
    let p = pki(&["somewhere.else.test"], true);
    let record = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    assert_eq!(check(&[record], &p.chain()[..1]), Ok(Matched::EndEntity));
}

#[test]
fn dane_ta_matches_the_root_or_the_intermediate_and_verifies_the_chain() {
    let p = pki(&["mx.example.test"], false);
    for (cert, depth) in [(&p.intermediate, 1), (&p.root, 2)] {
        for (selector, matching) in [
            (CERT, SHA2_256),
            (SPKI, SHA2_256),
            (CERT, FULL),
            (SPKI, SHA2_512),
        ] {
            let record = tlsa(DANE_TA, selector, matching, cert);
            assert_eq!(
                check(&[record], &p.chain()),
                Ok(Matched::TrustAnchor { depth }),
                "2 {selector} {matching} at depth {depth}"
            );
        }
    }
    // The TLSA base domain is a reference name too.
    let base = pki(&["example.test"], false);
    let record = tlsa(DANE_TA, SPKI, SHA2_256, &base.root);
    assert!(check(&[record], &base.chain()).is_ok());
}

#[test]
fn dane_ta_wants_the_name_and_a_valid_chain() {
    let wrong_name = pki(&["other.test"], false);
    let record = tlsa(DANE_TA, SPKI, SHA2_256, &wrong_name.root);
    assert!(matches!(
        check(&[record], &wrong_name.chain()),
        Err(DaneError::Name(_))
    ));

    let expired = pki(&["mx.example.test"], true);
    let record = tlsa(DANE_TA, SPKI, SHA2_256, &expired.root);
    assert!(matches!(
        check(&[record], &expired.chain()),
        Err(DaneError::Chain(webpki::Error::CertExpired { .. }))
    ));

    // The root of another PKI, sent after this chain: it matches a
    // record, but this leaf does not chain to it.
    let p = pki(&["mx.example.test"], false);
    let other = pki(&["mx.example.test"], false);
    let record = tlsa(DANE_TA, SPKI, SHA2_256, &other.root);
    let mut chain = p.chain();
    chain.push(other.root.clone());
    assert!(matches!(check(&[record], &chain), Err(DaneError::Chain(_))));
}

#[test]
fn a_ta_record_for_the_leaf_itself_is_no_match() {
    let p = pki(&["mx.example.test"], false);
    let record = tlsa(DANE_TA, CERT, SHA2_256, &p.leaf);
    assert_eq!(check(&[record], &p.chain()), Err(DaneError::NoMatch));
}

#[test]
fn records_of_another_certificate_do_not_match() {
    let p = pki(&["mx.example.test"], false);
    let other = pki(&["mx.example.test"], false);
    let records = [
        tlsa(DANE_EE, SPKI, SHA2_256, &other.leaf),
        tlsa(DANE_TA, CERT, SHA2_256, &other.root),
    ];
    assert_eq!(check(&records, &p.chain()), Err(DaneError::NoMatch));
    // One matching record among others is enough.
    let mut more = records.to_vec();
    more.push(tlsa(DANE_EE, CERT, SHA2_512, &p.leaf));
    assert_eq!(check(&more, &p.chain()), Ok(Matched::EndEntity));
}

#[test]
fn unusable_records_are_ignored() {
    let p = pki(&["mx.example.test"], false);
    let mut pkix_ee = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    pkix_ee.usage = 1;
    let mut pkix_ta = tlsa(DANE_TA, SPKI, SHA2_256, &p.root);
    pkix_ta.usage = 0;
    let mut short = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    short.data.pop();
    let mut unknown_matching = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    unknown_matching.matching = 3;
    let mut unknown_selector = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    unknown_selector.selector = 2;
    let unusable = [pkix_ee, pkix_ta, short, unknown_matching, unknown_selector];
    for record in &unusable {
        assert!(!record.usable(), "{record:?}");
    }
    assert_eq!(
        check(&unusable, &p.chain()),
        Err(DaneError::NoUsableRecords)
    );
    let mut with_one = unusable.to_vec();
    with_one.push(tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf));
    assert_eq!(check(&with_one, &p.chain()), Ok(Matched::EndEntity));
}

#[test]
fn no_certificate_and_garbage_certificates_fail_cleanly() {
    let p = pki(&["mx.example.test"], false);
    let record = tlsa(DANE_EE, SPKI, SHA2_256, &p.leaf);
    assert_eq!(
        check(std::slice::from_ref(&record), &[]),
        Err(DaneError::NoCertificate)
    );
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert_eq!(
        check(&[record], std::slice::from_ref(&garbage)),
        Err(DaneError::NoMatch)
    );
    let ta = Tlsa {
        usage: DANE_TA,
        selector: CERT,
        matching: SHA2_256,
        data: digest::digest(&digest::SHA256, garbage.as_ref())
            .as_ref()
            .to_vec(),
    };
    assert!(matches!(
        check(&[ta], &[p.leaf.clone(), garbage]),
        Err(DaneError::Chain(_))
    ));
}
