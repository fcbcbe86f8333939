//! Binding outgoing connections to a local source address (Postfix's
//! `smtp_bind_address` and `smtp_bind_address6`, a pool's members), and
//! the start-up check that every configured one can be bound: an address
//! that is not on any interface is a clear error naming it, not a silent
//! fallback to the default address.

use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A local address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {ip}: {source}{}", hint(source))]
pub struct BindError {
    /// The address.
    pub ip: IpAddr,
    /// What `socket(2)` or `bind(2)` said.
    pub source: io::Error,
}

impl BindError {
    /// `EADDRNOTAVAIL`: the address is not this host's (not, or no longer,
    /// on an interface; an IPv6 address still tentative).
    pub fn unavailable(&self) -> bool {
        self.source.raw_os_error() == Some(libc::EADDRNOTAVAIL)
    }

    /// `EADDRINUSE`: no local port is left on the address.
    pub fn in_use(&self) -> bool {
        self.source.raw_os_error() == Some(libc::EADDRINUSE)
    }
}

/// What the operator may do about a failed bind.
fn hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => " (is it configured on an interface?)",
        Some(libc::EADDRINUSE) => " (no local port is free on it)",
        _ => "",
    }
}

/// The [`BindError`] inside an `io::Error` from opening a connection, when
/// binding its source address is what failed.
pub fn bind_error(e: &io::Error) -> Option<&BindError> {
    e.get_ref()?.downcast_ref::<BindError>()
}

/// Binds `socket` to `ip` with no port of its own: the port is chosen at
/// `connect`, among those free for that server (`IP_BIND_ADDRESS_NO_PORT`,
/// Linux 4.2), so one source address is not limited to one ephemeral
/// range shared by all its connections. The family of `ip` must be the
/// socket's.
pub fn bind_source(socket: &Socket, ip: IpAddr) -> Result<(), BindError> {
    // An older kernel without the option binds a port at once: the same
    // bind, with fewer ports to go round.
    let _ = setsockopt(socket, IpBindAddressNoPort, &true);
    socket
        .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
        .map_err(|source| BindError { ip, source })
}

/// Checks that each of `addrs` can be bound (a TCP socket of its family,
/// bound and closed), for the start-up and reload check of the settings
/// that name source addresses. The first that cannot is the error.
pub fn check_bindable(addrs: &[IpAddr]) -> Result<(), BindError> {
    for &ip in addrs {
        let domain = Domain::for_address(SocketAddr::new(ip, 0));
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
            .map_err(|source| BindError { ip, source })?;
        bind_source(&socket, ip)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_this_hosts_addresses() {
        let mut addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("an address")];
        // Linux routes all of 127/8 to the loopback interface.
        addrs.push("127.0.0.2".parse().expect("an address"));
        assert!(check_bindable(&addrs).is_ok());
        assert!(check_bindable(&[]).is_ok());
    }

    #[test]
    fn names_an_address_that_is_not_this_hosts() {
        let addrs: Vec<IpAddr> = ["127.0.0.2", "192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|a| a.parse().expect("an address"))
            .collect();
        // TEST-NET-1 (RFC 5737) is on no interface.
        let e = check_bindable(&addrs).expect_err("192.0.2.1 is not this host's");
        assert_eq!(e.ip, addrs[1]);
        assert!(e.unavailable(), "{e:?}");
        assert!(!e.in_use(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot bind 192.0.2.1: Cannot assign requested address (os error 99) \
             (is it configured on an interface?)"
        );
    }
}
