//! Postman's JSON log: records parsed from its stderr, and the delivery and
//! quarantine records among them.

use serde_json::Value;

/// One JSON object per line; other lines (a panic message, say) are skipped.
pub fn parse_log(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

/// One `"msg":"delivery"` record: the fate of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub queue_id: String,
    pub domain: String,
    /// The site the recipient's domain was delivered through (the MX host
    /// names it shares with other domains); empty when the record has no
    /// such field.
    pub site: String,
    pub to: String,
    /// `host[ip]:port`, or `none`.
    pub relay: String,
    pub delay: f64,
    /// `sent`, `deferred` or `bounced`.
    pub status: String,
    /// The reply code; `None` when there was no reply (absent or 0).
    pub code: Option<u16>,
    pub reply: String,
    /// The enhanced status code (`dsn`).
    pub dsn: String,
    /// How TLS was used (`tls`): `none`, or protocol, cipher and
    /// `verified`/`unverified`; empty when the record has no such field.
    pub tls: String,
    /// Which setting chose the route (`via`): `mx`, `transport`,
    /// `relayhost`, `sender_relayhost` or `fallback`; empty when absent.
    pub via: String,
    /// The local address the connection left from (`source`), `-` when
    /// the kernel chose; empty when absent.
    pub source: String,
}

/// One `"msg":"quarantined"` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub queue_id: String,
    pub domain: String,
    pub reason: String,
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The delivery records among `records`.
pub fn deliveries(records: &[Value]) -> Vec<Delivery> {
    records
        .iter()
        .filter(|r| r["msg"] == "delivery")
        .map(|r| Delivery {
            queue_id: text(r, "queue_id"),
            domain: text(r, "domain"),
            site: text(r, "site"),
            to: text(r, "to"),
            relay: text(r, "relay"),
            delay: match &r["delay"] {
                Value::Number(n) => n.as_f64().unwrap_or(-1.0),
                Value::String(s) => s.trim_end_matches('s').parse().unwrap_or(-1.0),
                _ => -1.0,
            },
            status: text(r, "status"),
            code: match &r["code"] {
                Value::Number(n) => n.as_u64().map(|c| c as u16),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .filter(|&c| c != 0),
            reply: text(r, "reply"),
            dsn: text(r, "dsn"),
            tls: text(r, "tls"),
            via: text(r, "via"),
            source: text(r, "source"),
        })
        .collect()
}

/// The quarantine records among `records`.
pub fn quarantines(records: &[Value]) -> Vec<Quarantine> {
    records
        .iter()
        .filter(|r| r["msg"] == "quarantined")
        .map(|r| Quarantine {
            queue_id: text(r, "queue_id"),
            domain: text(r, "domain"),
            reason: text(r, "reason"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_delivery_records() {
        let log = concat!(
            "not json\n",
            r#"{"msg":"delivery","queue_id":"q1","domain":"d.test","to":"a@d.test","relay":"mx[127.0.0.1]:25","delay":0.25,"status":"sent","code":250,"reply":"250 ok"}"#,
            "\n",
            r#"{"msg":"delivery","queue_id":"q2","domain":"d.test","to":"b@d.test","relay":"none","delay":1,"status":"deferred","code":0,"reply":"connection refused"}"#,
            "\n",
            r#"{"msg":"quarantined","queue_id":"bad","domain":"d.test","reason":"no X-Postman-To"}"#,
            "\n"
        );
        let records = parse_log(log);
        assert_eq!(records.len(), 3);
        let d = deliveries(&records);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].code, Some(250));
        assert_eq!(d[0].delay, 0.25);
        assert_eq!(d[1].code, None, "code 0 means no reply");
        assert_eq!(d[1].relay, "none");
        assert_eq!(quarantines(&records)[0].reason, "no X-Postman-To");
    }
}
