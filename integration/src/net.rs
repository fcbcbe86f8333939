//! Loopback addressing for tests: a fresh block of 127/8 addresses and a free
//! port per test.
//!
//! postman dials `application.server_port` on every MX host, so every SMTP
//! server of one test listens on the same port on a distinct loopback address
//! (Linux answers the whole of 127.0.0.0/8 on `lo`). An address where nothing
//! listens refuses connections at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Blocks handed out in this process; each block is one /24 under 127/8.
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

/// Addresses and a port reserved for one test.
#[derive(Debug, Clone)]
pub struct TestNet {
    block: [u8; 2],
    port: u16,
}

impl TestNet {
    /// A new block `127.x.y.0/24` (x ≥ 10, never used before in this
    /// process, and salted with the process id so two test binaries running
    /// at once are unlikely to meet) and a port that was free on 127.0.0.1.
    pub fn new() -> TestNet {
        let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        // 240 second octets (10..=249) × 256 third octets; the pid picks the
        // starting point so concurrent processes start far apart.
        let salt = std::process::id() % 240;
        let second = 10 + ((salt + n / 256) % 240) as u8;
        let third = (n % 256) as u8;
        TestNet {
            block: [second, third],
            port: free_port(),
        }
    }

    /// The port every SMTP server of this test listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `k`-th address of the block (`k` in 1..=254).
    pub fn ip(&self, k: u8) -> IpAddr {
        IpAddr::V4(self.ipv4(k))
    }

    /// The `k`-th address of the block as an [`Ipv4Addr`] (for A records).
    pub fn ipv4(&self, k: u8) -> Ipv4Addr {
        assert!((1..=254).contains(&k), "host number {k} is not in 1..=254");
        Ipv4Addr::new(127, self.block[0], self.block[1], k)
    }

    /// The `k`-th address with the test's port.
    pub fn addr(&self, k: u8) -> SocketAddr {
        SocketAddr::new(self.ip(k), self.port)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        TestNet::new()
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago (and on UDP too, so it
/// also suits a DNS server).
pub fn free_port() -> u16 {
    for _ in 0..64 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local_addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both TCP and UDP after 64 tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_distinct_and_addresses_listenable() {
        let a = TestNet::new();
        let b = TestNet::new();
        assert_ne!(a.ip(1), b.ip(1), "two blocks share 127.x.y.1");
        // The same port on two loopback addresses: both binds must work.
        let l1 = TcpListener::bind(a.addr(1)).expect("bind first address");
        let l2 = TcpListener::bind(a.addr(2)).expect("bind second address");
        assert_eq!(
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port()
        );
        // Nothing listens on .3: refused, not a timeout.
        let err = std::net::TcpStream::connect(a.addr(3)).expect_err("connect to .3");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}
