//! What the routing table needs from this host before it is used, at
//! start, on every reload and in `check-config`: the password file read
//! (only when no one else can read it), an entry for every next hop that
//! must authenticate, every configured source address bindable, and a
//! client certificate's key that matches it. Any
//! failure names the setting and stops the start, or makes a reload keep
//! the settings it had.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use postman::config::Config;

use crate::bind::check_bindable;
use crate::credentials::load_password_file;

/// Reads what `config.routing` refers to into it and checks the rest.
pub fn prepare(config: &mut Config) -> anyhow::Result<()> {
    let routing = &mut config.routing;
    if let Some(path) = &routing.password_file {
        let map = load_password_file(path).context("routing.password_file")?;
        routing.credentials = Arc::new(map);
    }
    for hop in routing.hops() {
        let (Some(next_hop), Some(true)) = (&hop.next_hop, hop.auth) else {
            continue;
        };
        if routing.credentials.get(next_hop).is_none() {
            let file = routing
                .password_file
                .as_deref()
                .map_or_else(|| "(none)".into(), |p| p.display().to_string());
            return Err(anyhow!(
                "routing.password_file {file} has no line for {}, which says auth = true \
                 (write it as `{}  user:password`)",
                next_hop,
                next_hop.key()
            ));
        }
    }
    check_bindable(&routing.source_addresses()).map_err(|e| {
        anyhow!("routing: {e}: every bind_address and source address must be one of this host's")
    })?;
    if let Some(identity) = &config.tls_client {
        crate::worker::certified(identity).map_err(|e| {
            anyhow!(
                "tls.client_key {} cannot be used with tls.client_cert {}: {e}",
                identity.key_file.display(),
                identity.cert_file.display()
            )
        })?;
    }
    Ok(())
}
