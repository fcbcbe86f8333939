//! SMTP AUTH (RFC 4954) for the private Postfix: Cyrus SASL with a sasldb
//! that `saslpasswd2` makes in the instance's own directory, so the server
//! is a submission relay as providers run them.
//!
//! The realm: Postfix hands Cyrus `myhostname` as the server's name and,
//! with `smtpd_sasl_local_domain` empty, no user realm. Cyrus then looks a
//! login without `@` up as `name@myhostname` in the sasldb and reports it
//! unchanged, so a user created with `saslpasswd2 -u postfix.test
//! relay-user` logs in as `relay-user` and Postfix logs
//! `sasl_username=relay-user`. A login with `@` carries its own realm:
//! `ses@provider.test` is stored as `ses` in realm `provider.test`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::certs::make_readable;

/// Postfix's `myhostname` for every instance, and so the sasldb realm of
/// a user name without `@`.
pub(super) const MYHOSTNAME: &str = "postfix.test";

/// What [`SaslUsers::new`] offers: the mechanisms a relay client may use.
pub const DEFAULT_MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "SCRAM-SHA-256"];

/// The users a Postfix with SMTP AUTH knows and how it lets them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslUsers {
    /// Login names and passwords.
    pub users: Vec<(String, String)>,
    /// The mechanisms offered (Cyrus' `mech_list`), in that order.
    pub mechanisms: Vec<String>,
    /// AUTH is offered without TLS too (`smtpd_tls_auth_only = no`), and
    /// TLS is not required: for a route that allows plaintext AUTH. Without
    /// it, the instance needs [`PostfixOptions::tls`](super::PostfixOptions::tls)
    /// and refuses MAIL and AUTH before STARTTLS.
    pub plaintext: bool,
    /// The sasldb is unreadable to smtpd (owned by root, mode 0600), so
    /// every AUTH is answered `454 4.7.0 Temporary authentication failure:
    /// generic failure`: the server-side fault a client must treat as
    /// temporary.
    pub broken_db: bool,
}

impl SaslUsers {
    /// These users, with PLAIN, LOGIN and SCRAM-SHA-256, after TLS only.
    pub fn new(users: &[(&str, &str)]) -> SaslUsers {
        SaslUsers {
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
            mechanisms: DEFAULT_MECHANISMS.iter().map(|m| (*m).to_owned()).collect(),
            plaintext: false,
            broken_db: false,
        }
    }

    /// Offers only `mechanisms` (e.g. `["SCRAM-SHA-256"]` or `["LOGIN"]`).
    pub fn mechanisms(mut self, mechanisms: &[&str]) -> SaslUsers {
        self.mechanisms = mechanisms.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    /// The `main.cf` lines for an instance in `root`: AUTH through Cyrus,
    /// and relaying for authenticated clients only. `mynetworks` is empty
    /// so that no address, loopback included, is trusted without AUTH.
    pub(super) fn main_cf(&self, root: &Path, tls: bool) -> String {
        let (level, auth_only) = match (tls, self.plaintext) {
            (true, false) => ("encrypt", "yes"),
            (true, true) => ("may", "no"),
            (false, _) => ("none", "no"),
        };
        format!(
            "smtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = cyrus\n\
             smtpd_sasl_path = smtpd\n\
             cyrus_sasl_config_path = {config}\n\
             smtpd_sasl_local_domain =\n\
             smtpd_sasl_security_options = noanonymous\n\
             smtpd_sasl_authenticated_header = yes\n\
             smtpd_tls_security_level = {level}\n\
             smtpd_tls_auth_only = {auth_only}\n\
             mynetworks =\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n",
            config = config_dir(root).display(),
        )
    }

    /// Writes Cyrus' `smtpd.conf` and the sasldb for an instance in
    /// `root` (whose `conf` exists) and gives the database to the postfix
    /// user, as whom smtpd reads it.
    pub(super) fn install(&self, root: &Path, uid: u32, gid: u32) {
        let config = config_dir(root);
        let db = db_path(root);
        for dir in [&config, db.parent().expect("the sasldb has a directory")] {
            std::fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            make_readable(dir);
        }
        let conf = config.join("smtpd.conf");
        std::fs::write(&conf, self.smtpd_conf(&db)).expect("write smtpd.conf");
        make_readable(&conf);
        for (user, password) in &self.users {
            add_user(&db, user, password);
        }
        if db.exists() && !self.broken_db {
            std::os::unix::fs::chown(&db, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postfix: {e}", db.display()));
        }
        if self.broken_db {
            use std::os::unix::fs::PermissionsExt;
            assert!(
                db.exists(),
                "broken_db needs a user, so that a sasldb exists"
            );
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", db.display()));
        }
    }

    fn smtpd_conf(&self, db: &Path) -> String {
        format!(
            "pwcheck_method: auxprop\n\
             auxprop_plugin: sasldb\n\
             sasldb_path: {}\n\
             mech_list: {}\n",
            db.display(),
            self.mechanisms.join(" "),
        )
    }
}

/// Where smtpd finds `smtpd.conf`: `$config_directory/sasl`. Debian's
/// Postfix looks only there (it ignores `cyrus_sasl_config_path`, which
/// names the same directory for other builds).
fn config_dir(root: &Path) -> PathBuf {
    root.join("conf").join("sasl")
}

/// The sasldb, outside `conf`: `postfix check` warns about files there
/// that root does not own, and smtpd reads it as the postfix user.
fn db_path(root: &Path) -> PathBuf {
    root.join("sasl").join("sasldb2")
}

/// The login name's parts as saslpasswd2 takes them: the name and its
/// realm (after the last `@`, else [`MYHOSTNAME`]).
fn user_and_realm(login: &str) -> (&str, &str) {
    match login.rsplit_once('@') {
        Some((user, realm)) => (user, realm),
        None => (login, MYHOSTNAME),
    }
}

/// `saslpasswd2 -p -c -f db -u realm user`, the password on stdin.
fn add_user(db: &Path, login: &str, password: &str) {
    assert!(
        !password.contains('\n'),
        "saslpasswd2 -p reads one line: a password cannot hold a newline"
    );
    let program = saslpasswd2();
    let (user, realm) = user_and_realm(login);
    let mut child = Command::new(&program)
        .args(["-p", "-c", "-f"])
        .arg(db)
        .args(["-u", realm, user])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; the routing tests need Cyrus SASL's tools \
                 (`apt-get install sasl2-bin libsasl2-modules`, or run scripts/test.sh, which \
                 installs them)",
                program.display()
            )
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(password.as_bytes())
        .expect("write the password to saslpasswd2");
    let out = child.wait_with_output().expect("wait for saslpasswd2");
    if !out.status.success() {
        panic!(
            "saslpasswd2 for {login:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's saslpasswd2, which CI's PATH (without /usr/sbin) may miss.
fn saslpasswd2() -> PathBuf {
    let sbin = Path::new("/usr/sbin/saslpasswd2");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("saslpasswd2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_without_at_lives_in_the_myhostname_realm() {
        for (login, want) in [
            ("relay-user", ("relay-user", MYHOSTNAME)),
            ("ses@provider.test", ("ses", "provider.test")),
            ("a@b@c.test", ("a@b", "c.test")),
        ] {
            assert_eq!(user_and_realm(login), want, "{login}");
        }
    }

    #[test]
    fn tls_and_plaintext_choose_the_security_level() {
        let root = Path::new("/x");
        for (tls, plaintext, level, auth_only) in [
            (true, false, "encrypt", "yes"),
            (true, true, "may", "no"),
            (false, true, "none", "no"),
        ] {
            let users = SaslUsers {
                plaintext,
                ..SaslUsers::new(&[])
            };
            let cf = users.main_cf(root, tls);
            assert!(
                cf.contains(&format!("smtpd_tls_security_level = {level}\n")),
                "{cf}"
            );
            assert!(
                cf.contains(&format!("smtpd_tls_auth_only = {auth_only}\n")),
                "{cf}"
            );
            assert!(cf.contains("mynetworks =\n"), "{cf}");
            assert!(
                cf.contains("cyrus_sasl_config_path = /x/conf/sasl\n"),
                "{cf}"
            );
        }
    }

    #[test]
    fn the_mechanisms_are_the_mech_list() {
        let conf = SaslUsers::new(&[("u", "p")])
            .mechanisms(&["SCRAM-SHA-256"])
            .smtpd_conf(Path::new("/r/sasl/sasldb2"));
        assert!(conf.contains("mech_list: SCRAM-SHA-256\n"), "{conf}");
        assert!(conf.contains("sasldb_path: /r/sasl/sasldb2\n"), "{conf}");
        let all = SaslUsers::new(&[]).smtpd_conf(Path::new("/db"));
        assert!(
            all.contains("mech_list: PLAIN LOGIN SCRAM-SHA-256\n"),
            "{all}"
        );
    }
}
