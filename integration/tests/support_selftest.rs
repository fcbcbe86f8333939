//! Self-tests of the test support: the DNS server answers a real resolver
//! (hickory-resolver) as described, aiosmtpd receives exactly what an
//! SMTP client sends, and a Postfix with client limits refuses in its own
//! words and counts it. These do not need postman and must always pass.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::Resolver;
use postman_integration::{
    numbered_domains, AiosmtpdSink, ClientLimits, DnsServer, Postfix, PostfixOptions, TestNet,
    Zones,
};

fn resolver(server: SocketAddr) -> Resolver<TokioRuntimeProvider> {
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(500);
    opts.attempts = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = 0;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .expect("build resolver")
}

/// The response code an error carries, if the server answered one.
fn rcode_of(e: &NetError) -> Option<ResponseCode> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => Some(no.response_code),
        NetError::Dns(DnsError::ResponseCode(code)) => Some(*code),
        _ => None,
    }
}

#[test]
fn dns_server_answers_mx_a_aaaa_null_mx_nxdomain_servfail() {
    let zones = Zones::new()
        .mx("d1.test", 20, "mx2.d1.test")
        .mx("d1.test", 10, "mx1.d1.test")
        .a("mx1.d1.test", Ipv4Addr::new(127, 1, 2, 3))
        .aaaa("mx1.d1.test", Ipv6Addr::LOCALHOST)
        .addr("implicit.test", IpAddr::V4(Ipv4Addr::new(127, 4, 5, 6)))
        .null_mx("nullmx.test")
        .servfail("broken.test")
        .silent("silent.test");
    let dns = DnsServer::start(zones);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = resolver(dns.addr());
    rt.block_on(async {
        let mx = r.mx_lookup("d1.test.").await.expect("MX d1.test");
        let mut got: Vec<(u16, String)> = mx
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_string())),
                _ => None,
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (10, "mx1.d1.test.".to_string()),
                (20, "mx2.d1.test.".to_string())
            ]
        );

        let ips = r
            .lookup_ip("mx1.d1.test.")
            .await
            .expect("A/AAAA mx1.d1.test");
        let mut ips: Vec<IpAddr> = ips.iter().collect();
        ips.sort();
        assert_eq!(
            ips,
            [
                IpAddr::V4(Ipv4Addr::new(127, 1, 2, 3)),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );

        let a = r
            .lookup("implicit.test.", RecordType::A)
            .await
            .expect("A implicit.test");
        assert_eq!(a.answers().len(), 1, "A implicit.test");
        // No MX at a name with only an A record: NOERROR, no answers.
        let e = r
            .mx_lookup("implicit.test.")
            .await
            .expect_err("MX implicit.test");
        assert_eq!(
            rcode_of(&e),
            Some(ResponseCode::NoError),
            "MX implicit.test: {e:?}"
        );

        let null = r.mx_lookup("nullmx.test.").await.expect("MX nullmx.test");
        let null: Vec<(u16, String)> = null
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(null, [(0, ".".to_string())], "null MX");

        let e = r
            .mx_lookup("nowhere.test.")
            .await
            .expect_err("MX nowhere.test");
        assert_eq!(
            rcode_of(&e),
            Some(ResponseCode::NXDomain),
            "MX nowhere.test: {e:?}"
        );

        let e = r
            .mx_lookup("mail.broken.test.")
            .await
            .expect_err("MX mail.broken.test");
        assert_eq!(
            rcode_of(&e),
            Some(ResponseCode::ServFail),
            "MX mail.broken.test: {e:?}"
        );

        let started = std::time::Instant::now();
        let e = r
            .mx_lookup("silent.test.")
            .await
            .expect_err("MX silent.test");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "silent.test answered after {:?}: {e:?}",
            started.elapsed()
        );
    });
}

fn expect_reply(reader: &mut BufReader<TcpStream>, code: &str) {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read reply");
        assert!(line.starts_with(code), "wanted {code}, got {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            return;
        }
    }
}

#[test]
fn aiosmtpd_sink_saves_exact_unstuffed_data() {
    let net = TestNet::new();
    let out = tempfile::tempdir().unwrap();
    let sink = AiosmtpdSink::start(net.ip(1), net.port(), out.path());
    let stream = TcpStream::connect(net.addr(1)).expect("connect to aiosmtpd");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    expect_reply(&mut r, "220");
    for (cmd, code) in [
        ("EHLO client.test\r\n", "250"),
        ("MAIL FROM:<a@src.test>\r\n", "250"),
        ("RCPT TO:<x@d1.test>\r\n", "250"),
        ("RCPT TO:<y@d1.test>\r\n", "250"),
        ("DATA\r\n", "354"),
        ("Subject: t\r\n\r\n..leading dot\r\nlast\r\n.\r\n", "250"),
        ("MAIL FROM:<>\r\n", "250"),
        ("RCPT TO:<z@d2.test>\r\n", "250"),
        ("DATA\r\n", "354"),
        ("x\r\n.\r\n", "250"),
        ("QUIT\r\n", "221"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        expect_reply(&mut r, code);
    }
    let got = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].mail_from, "a@src.test");
    assert_eq!(got[0].rcpt_tos, ["x@d1.test", "y@d1.test"]);
    assert_eq!(got[0].helo, "client.test");
    assert_eq!(got[0].data, b"Subject: t\r\n\r\n.leading dot\r\nlast\r\n");
    assert_eq!(got[1].mail_from, "", "null sender");
    assert_eq!(got[1].data, b"x\r\n");
    assert!(
        got[0].peer.starts_with("127.0.0.1:"),
        "peer {}",
        got[0].peer
    );
}

#[test]
fn dns_server_serves_a_thousand_domains_on_one_mx_host() {
    let domains = numbered_domains("d", 1000, "shared.test");
    let dns = DnsServer::start(
        Zones::new()
            .mx_shared(&domains, "mx.shared.test")
            .a("mx.shared.test", Ipv4Addr::new(127, 7, 7, 7)),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = resolver(dns.addr());
    rt.block_on(async {
        for domain in [&domains[0], &domains[499], &domains[999]] {
            let mx = r
                .mx_lookup(format!("{domain}."))
                .await
                .unwrap_or_else(|e| panic!("MX {domain}: {e}"));
            let got: Vec<String> = mx
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::MX(m) => Some(m.exchange.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(got, ["mx.shared.test."], "MX {domain}");
        }
    });
}

/// Reads one reply (all its lines) from `reader`.
fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read reply") == 0 {
            return reply;
        }
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// Connects to `addr` and reads the greeting.
fn greeted(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let stream = TcpStream::connect(addr).expect("connect to Postfix");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let greeting = read_reply(&mut reader);
    (reader, greeting)
}

fn say(reader: &mut BufReader<TcpStream>, command: &str) -> String {
    reader
        .get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("send a command");
    read_reply(reader)
}

#[test]
fn postfix_limits_connections_per_client_in_its_own_words() {
    let net = TestNet::new();
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &["dest.test"],
        &PostfixOptions {
            limits: Some(ClientLimits::connections(2)),
            quiet: true,
            ..PostfixOptions::default()
        },
    );
    let (_first, one) = greeted(net.addr(1));
    let (_second, two) = greeted(net.addr(1));
    let (_third, three) = greeted(net.addr(1));
    assert!(one.starts_with("220 "), "first greeting {one:?}");
    assert!(two.starts_with("220 "), "second greeting {two:?}");
    assert_eq!(
        three, "421 4.7.0 postfix.test Error: too many connections from 127.0.0.1\r\n",
        "the third connection at once"
    );
    assert!(
        postfix.wait_for_log(
            "Connection concurrency limit exceeded",
            Duration::from_secs(5)
        ),
        "{}",
        postfix.log()
    );
    let refusals = postfix.refusals();
    assert_eq!(refusals.concurrency, 1, "{refusals:?}\n{}", postfix.log());
    assert_eq!(refusals.connections(), 1, "{refusals:?}");
    assert_eq!(postfix.connection_count(), 3, "{}", postfix.log());
}

#[test]
fn postfix_limits_messages_per_client_in_its_own_words() {
    let net = TestNet::new();
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &["dest.test"],
        &PostfixOptions {
            limits: Some(ClientLimits::message_rate(2, Duration::from_secs(60))),
            quiet: true,
            ..PostfixOptions::default()
        },
    );
    let (mut session, greeting) = greeted(net.addr(1));
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    assert!(say(&mut session, "EHLO client.test").starts_with("250"));
    let mut replies = Vec::new();
    for n in 0..3 {
        let reply = say(&mut session, &format!("MAIL FROM:<s{n}@src.test>"));
        replies.push(reply);
        say(&mut session, "RSET");
    }
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(replies[1].starts_with("250 "), "{replies:?}");
    assert_eq!(
        replies[2], "450 4.7.1 Error: too much mail from 127.0.0.1\r\n",
        "the third MAIL in the time unit"
    );
    assert!(
        postfix.wait_for_log("rate limit exceeded", Duration::from_secs(5)),
        "{}",
        postfix.log()
    );
    assert_eq!(postfix.refusals().message_rate, 1, "{}", postfix.log());
}

/// The benchmark's receiver (`src/bin/shaped-sink/`): a capped site greets
/// one connection too many with its busy reply, throttles MAIL past its rate,
/// greylists a recipient's first attempt; a black hole never greets; the
/// stats file counts all of it.
#[test]
fn shaped_sink_caps_throttles_greylists_and_counts() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "port": net.port(),
        "sites": [
            {"name": "capped", "group": "p", "addrs": [net.ip(1)], "mode": "serve",
             "max_connections": 1, "busy_reply": "421 4.7.0 busy",
             "rate": {"per_second": 0.001, "burst": 1, "at": "mail", "reply": "450 4.7.650 slow down"},
             "greylist": {"delay_ms": 0, "reply": "450 4.2.0 greylisted"}},
            {"name": "hole", "group": "h", "addrs": [net.ip(2)], "mode": "blackhole"},
        ],
    });
    let config_path = dir.path().join("sink.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let stats = dir.path().join("stats.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shaped-sink"))
        .arg(&config_path)
        .arg(&stats)
        .spawn()
        .expect("start shaped-sink");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stats.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "shaped-sink did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect = |k: u8| {
        let s = TcpStream::connect(net.addr(k)).expect("connect to shaped-sink");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (s.try_clone().unwrap(), BufReader::new(s))
    };
    let (mut w, mut r) = connect(1);
    expect_reply(&mut r, "220");
    let (_, mut busy) = connect(1);
    expect_reply(&mut busy, "421 4.7.0 busy");
    for (cmd, code) in [
        ("EHLO client.test\r\n", "250"),
        ("MAIL FROM:<a@src.test>\r\n", "250"),
        ("RCPT TO:<g@d.test>\r\n", "450 4.2.0 greylisted"),
        ("RCPT TO:<G@d.test>\r\n", "250"),
        ("DATA\r\n", "354"),
        ("x\r\n.\r\n", "250"),
        ("MAIL FROM:<a@src.test>\r\n", "450 4.7.650 slow down"),
        ("QUIT\r\n", "221"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        expect_reply(&mut r, code);
    }
    let (hole, _) = connect(2);
    hole.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let silent = std::io::Read::read(&mut &hole, &mut byte);
    assert!(silent.is_err(), "a black hole greeted: {silent:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let total = &got["total"];
    for (key, want) in [
        ("connections", 3),
        ("refused", 1),
        ("throttled", 1),
        ("greylisted", 1),
        ("messages", 1),
        ("unique", 1),
    ] {
        assert_eq!(total[key], want, "{key} in {got}");
    }
    assert_eq!(got["sites"]["hole"]["connections"], 1, "{got}");
    assert!(got["last_unique_at"].as_f64().is_some(), "{got}");
}
