//! Fuzzes the DANE matcher (`postman::dane::verify`, RFC 7672): the TLSA
//! records come from DNS and the certificate chain from the server, both
//! outside postman's control. The input is cut into up to four records
//! (usage, selector, matching type, a length byte, the data) and a chain of
//! length-prefixed certificates; the records are also tried as digests of
//! the chain's own certificates, so matching paths are reached. Never a
//! panic; a DANE-EE match is a record that matches the first certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postman::dane::{verify, Matched, Tlsa};
use rustls_pki_types::{CertificateDer, UnixTime};

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Some(&[count]) = take(&mut input, 1) else {
        return;
    };
    let mut records = Vec::new();
    for _ in 0..(count % 5) {
        let Some(&[usage, selector, matching, len]) = take(&mut input, 4) else {
            return;
        };
        let Some(bytes) = take(&mut input, usize::from(len)) else {
            return;
        };
        records.push(Tlsa {
            usage,
            selector,
            matching,
            data: bytes.to_vec(),
        });
    }
    let mut chain = Vec::new();
    while let Some(&[hi, lo]) = take(&mut input, 2) {
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(input.len());
        let Some(der) = take(&mut input, len) else {
            break;
        };
        chain.push(CertificateDer::from(der.to_vec()));
        if chain.len() == 4 {
            break;
        }
    }
    // The same records, each made a full copy of a chain certificate.
    let mut copies = records.clone();
    for (record, cert) in copies.iter_mut().zip(chain.iter()) {
        record.matching = 0;
        record.data = cert.as_ref().to_vec();
    }
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_765_152_000));
    let names = ["mx.d.test", "d.test"];
    for set in [&records, &copies] {
        if let Ok(Matched::EndEntity) =
            verify(set, &chain, &names, now, webpki::ALL_VERIFICATION_ALGS)
        {
            assert!(
                set.iter().any(|r| r.usage == 3 && r.usable()),
                "EE match without an EE record"
            );
        }
    }
});
