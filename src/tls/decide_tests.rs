use std::sync::Arc;

use super::decide::*;
use super::found::{ActiveSts, DaneStatus, NoDane, StsProblem, StsStatus};
use super::level::Level;
use crate::dane::Tlsa;
use crate::mta_sts::Policy;
use crate::smtp::TlsMode;

const DOMAIN: &str = "d.test";
const HOST: &str = "mx1.d.test";

fn tlsa() -> Arc<[Tlsa]> {
    Arc::from(vec![Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    }])
}

fn sts(mode: &str, mx: &str) -> StsStatus {
    let text = format!("version: STSv1\nmode: {mode}\nmax_age: 86400\nmx: {mx}\n");
    StsStatus::Policy(Arc::new(ActiveSts {
        id: "20261208".into(),
        policy: Policy::parse(&text).expect("a policy"),
    }))
}

/// What a decision comes to, in one word per part, for the table.
fn summary(d: &Decision) -> String {
    match &d.action {
        Action::Connect { starttls, check } => {
            let check = match check {
                Check::Any => "any".to_owned(),
                Check::Pkix { names } => format!("pkix({})", names.join(" ")),
                Check::Dane { names, .. } => format!("dane({})", names.join(" ")),
            };
            format!("{} {} {check}", d.applied, starttls.as_str())
        }
        Action::Refuse(why) => format!("{} refuse: {why}", d.applied),
    }
}

const ON: Discovery = Discovery {
    dane: true,
    mta_sts: true,
};
const OFF: Discovery = Discovery {
    dane: false,
    mta_sts: false,
};

#[test]
fn each_level_with_what_was_found() {
    let none = DaneStatus::NotApplicable(NoDane::NoTlsa);
    let usable = DaneStatus::Usable(tlsa());
    let unusable = DaneStatus::Unusable;
    let failed = DaneStatus::Failed("SERVFAIL".into());
    let insecure = DaneStatus::NotApplicable(NoDane::InsecureMx);
    let no_sts = StsStatus::NoPolicy;
    let enforce = sts("enforce", "*.d.test");
    let elsewhere = sts("enforce", "mx.other.test");
    let testing = sts("testing", "mx.other.test");
    let unavailable = StsStatus::Unavailable(StsProblem::Fetch("connection refused".into()));
    let cases: &[(Level, Discovery, &DaneStatus, &StsStatus, &str)] = &[
        // Nothing published: the level's floor.
        (Level::May, ON, &none, &no_sts, "opportunistic opportunistic any"),
        (Level::Encrypt, ON, &none, &no_sts, "encrypt required any"),
        (Level::None, ON, &usable, &enforce, "none disabled any"),
        (Level::Dane, ON, &none, &no_sts, "opportunistic opportunistic any"),
        // Configured checks are taken as they are, whatever was found.
        (Level::Verify, ON, &usable, &elsewhere, "verify required pkix(mx1.d.test)"),
        (Level::Secure, ON, &failed, &enforce, "secure required pkix(d.test .d.test)"),
        // DANE raises may and encrypt, and comes before MTA-STS.
        (Level::May, ON, &usable, &no_sts, "dane required dane(mx1.d.test)"),
        (Level::Encrypt, ON, &usable, &elsewhere, "dane required dane(mx1.d.test)"),
        (Level::MtaSts, ON, &usable, &no_sts, "dane required dane(mx1.d.test)"),
        // A failed TLSA lookup never downgrades.
        (Level::May, ON, &failed, &enforce, "dane refuse: TLSA lookup for mx1.d.test failed: SERVFAIL"),
        // Unusable records: TLS without authentication, unless MTA-STS
        // authenticates.
        (Level::May, ON, &unusable, &no_sts, "dane-unusable required any"),
        (Level::May, ON, &unusable, &enforce, "mta-sts-enforce required pkix(mx1.d.test)"),
        (Level::DaneOnly, ON, &unusable, &enforce, "dane refuse: mx1.d.test: DANE required, but no TLSA record is usable for SMTP"),
        (Level::DaneOnly, OFF, &insecure, &enforce, "dane refuse: mx1.d.test: DANE required, but MX records not DNSSEC-signed"),
        (Level::DaneOnly, OFF, &usable, &no_sts, "dane required dane(mx1.d.test)"),
        // DANE switched off: its records are not used at may...
        (Level::May, OFF, &usable, &no_sts, "opportunistic opportunistic any"),
        // ...but the dane level asks for them itself.
        (Level::Dane, OFF, &usable, &no_sts, "dane required dane(mx1.d.test)"),
        // MTA-STS enforce: matching hosts need a trusted certificate naming
        // them; other hosts are not used.
        (Level::May, ON, &none, &enforce, "mta-sts-enforce required pkix(mx1.d.test)"),
        (Level::May, ON, &none, &elsewhere, "mta-sts-enforce refuse: mx1.d.test is not an MX host of the MTA-STS policy (id 20261208)"),
        (Level::May, OFF, &none, &elsewhere, "opportunistic opportunistic any"),
        (Level::Encrypt, ON, &insecure, &testing, "mta-sts-testing required any"),
        (Level::May, ON, &none, &testing, "mta-sts-testing opportunistic any"),
        (Level::May, ON, &none, &unavailable, "opportunistic opportunistic any"),
        // The mta-sts level: enforce or nothing, whatever tls.mta_sts says.
        (Level::MtaSts, OFF, &none, &enforce, "mta-sts-enforce required pkix(mx1.d.test)"),
        (Level::MtaSts, ON, &none, &testing, "mta-sts-enforce refuse: MTA-STS required, but the domain's policy is in mode testing"),
        (Level::MtaSts, ON, &none, &unavailable, "mta-sts-enforce refuse: MTA-STS required, but MTA-STS policy fetch failed: connection refused"),
        (Level::MtaSts, ON, &none, &no_sts, "mta-sts-enforce refuse: MTA-STS required, but the domain publishes no policy"),
    ];
    for (level, discovery, dane, sts, want) in cases {
        let got = decide(*level, *discovery, DOMAIN, HOST, dane, sts);
        assert_eq!(
            summary(&got),
            *want,
            "{level} {discovery:?} {dane:?} {sts:?}"
        );
    }
}

#[test]
fn a_dane_check_carries_the_records() {
    let records = tlsa();
    let d = decide(
        Level::May,
        ON,
        DOMAIN,
        HOST,
        &DaneStatus::Usable(Arc::clone(&records)),
        &StsStatus::NoPolicy,
    );
    let Action::Connect {
        starttls: TlsMode::Required,
        check: Check::Dane { tlsa, .. },
    } = d.action
    else {
        panic!("not a DANE check: {d:?}");
    };
    assert_eq!(tlsa, records);
}
