//! The report as a mail (RFC 8460 §5.3): `multipart/report;
//! report-type="tlsrpt"` with a short `text/plain` part and the gzipped
//! report as an `application/tlsrpt+gzip` attachment under its §5.1 file
//! name, the `TLS-Report-Domain` and `TLS-Report-Submitter` fields and the
//! Subject of §5.3. `TLS-Required: No` (RFC 8689 §5) asks every MTA on the
//! way to deliver it despite MTA-STS or DANE failures: §5.3.1 says report
//! delivery must not be held up by them, since those failures are what the
//! report is about. Sign the result with [`crate::dkim`] before sending.
//! Pure: the date and a unique token are arguments.

use std::fmt::Write as _;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::report::{Report, Submitter};
use crate::dkim::{SignError, Signer, REPORT_HEADERS};
use crate::dsn::{ascii, boundary, field, rfc5322_date, token, wrap};

/// Base64 line length (RFC 2045 §6.8: at most 76).
const BASE64_LINE: usize = 76;

/// Everything the report mail says besides the report.
#[derive(Debug, Clone, Copy)]
pub struct Mail<'a> {
    pub report: &'a Report,
    pub submitter: &'a Submitter,
    /// The `From` address (`tlsrpt.from`), in the submitter's domain so
    /// that its DKIM signature aligns.
    pub from: &'a str,
    /// The `To` address: a `mailto:` rua of the policy domain.
    pub to: &'a str,
    /// The mail's `Date` (now).
    pub date: SystemTime,
    /// A token unique to this mail: `Message-ID: <token@submitter>`.
    pub message_id: &'a str,
}

/// Renders the report mail: CRLF line ends, 7-bit, lines under 998
/// octets. Send it from [`Mail::from`] to [`Mail::to`].
pub fn render_mail(mail: &Mail<'_>) -> Vec<u8> {
    let report = mail.report;
    let submitter = ascii(&mail.submitter.domain);
    let domain = ascii(&report.policy_domain);
    let file_name = ascii(&report.file_name(mail.submitter));
    let token = token(mail.message_id);

    let text = text_part(mail, &submitter, &domain, &file_name);
    let attachment = base64_lines(&report.gzip());
    let boundary = boundary(
        &token,
        &submitter,
        &[text.as_bytes(), attachment.as_bytes()],
    );

    let mut out = String::new();
    field(&mut out, "From", &format!("<{}>", ascii(mail.from)));
    field(&mut out, "To", &format!("<{}>", ascii(mail.to)));
    field(
        &mut out,
        "Subject",
        &format!(
            "Report Domain: {domain} Submitter: {submitter} Report-ID: <{}>",
            ascii(&report.report_id)
        ),
    );
    field(&mut out, "Date", &rfc5322_date(mail.date));
    field(&mut out, "Message-ID", &format!("<{token}@{submitter}>"));
    field(&mut out, "TLS-Report-Domain", &domain);
    field(&mut out, "TLS-Report-Submitter", &submitter);
    field(&mut out, "TLS-Required", "No");
    field(&mut out, "Auto-Submitted", "auto-generated");
    field(&mut out, "MIME-Version", "1.0");
    field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\""),
    );
    out.push_str("\r\nThis is a MIME-formatted message.\r\n\r\n");

    let _ = write!(out, "--{boundary}\r\n");
    field(&mut out, "Content-Type", "text/plain; charset=us-ascii");
    field(&mut out, "Content-Transfer-Encoding", "7bit");
    out.push_str("\r\n");
    out.push_str(&text);
    out.push_str("\r\n");

    let _ = write!(out, "--{boundary}\r\n");
    field(
        &mut out,
        "Content-Type",
        &format!("application/tlsrpt+gzip; name=\"{file_name}\""),
    );
    field(&mut out, "Content-Transfer-Encoding", "base64");
    field(
        &mut out,
        "Content-Disposition",
        &format!("attachment; filename=\"{file_name}\""),
    );
    out.push_str("\r\n");
    out.push_str(&attachment);
    let _ = write!(out, "\r\n--{boundary}--\r\n");
    out.into_bytes()
}

/// [`render_mail`], signed by `signer` over [`REPORT_HEADERS`] with the
/// mail's date as `t=`: what goes into the queue for a `mailto:` rua.
pub fn signed_mail(
    mail: &Mail<'_>,
    signer: &Signer<'_>,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<Vec<u8>, SignError> {
    let timestamp = mail
        .date
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    signer.sign(&render_mail(mail), &REPORT_HEADERS, timestamp, rng)
}

/// The human-readable part: what the attachment is, for whom, which day.
fn text_part(mail: &Mail<'_>, submitter: &str, domain: &str, file_name: &str) -> String {
    let day = mail.report.day;
    let sentences = [
        format!(
            "This is an aggregate TLS report (RFC 8460) from {} ({submitter}) \
             about mail delivered to {domain} on {day}, 00:00:00 to 23:59:59 UTC.",
            ascii(&mail.submitter.organization)
        ),
        format!("The report is attached as {file_name}."),
        format!("Questions about it: {}.", ascii(&mail.submitter.contact)),
    ];
    let mut text = String::new();
    for sentence in sentences {
        for line in wrap(&sentence, 72, "") {
            text.push_str(&line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
    }
    text
}

/// `data` in base64, [`BASE64_LINE`] characters a line, each line ended by
/// CRLF except the last.
fn base64_lines(data: &[u8]) -> String {
    let encoded = STANDARD.encode(data);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(BASE64_LINE)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    lines.join("\r\n")
}
