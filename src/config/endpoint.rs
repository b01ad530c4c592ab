//! Upstream endpoint addresses: `IP:port`, or `name:port` for containers and service
//! discovery by DNS. A name is resolved when the config is loaded (at start and at every
//! reload), and each of its addresses becomes an endpoint of its own.

use std::net::{SocketAddr, ToSocketAddrs};

/// The addresses of one endpoint entry, or what is wrong with it (to follow its text).
pub fn resolve(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = text
        .rsplit_once(':')
        .filter(|(host, _)| is_host_name(host))
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or("is not IP:port or name:port (e.g. \"127.0.0.1:8080\")")?;
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("does not resolve: {err}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    match addrs.is_empty() {
        true => Err("resolves to no address".into()),
        false => Ok(addrs),
    }
}

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_taken_as_it_is() {
        assert_eq!(
            resolve("10.1.2.3:8080").unwrap(),
            ["10.1.2.3:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(resolve("[::1]:80").unwrap().len(), 1);
    }

    #[test]
    fn a_name_becomes_every_address_it_resolves_to() {
        let addrs = resolve("localhost:8080").unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
    }

    #[test]
    fn malformed_entries_say_what_is_expected() {
        for bad in [
            "localhost",
            "localhost:",
            "localhost:99999",
            ":8080",
            "-bad-.example:80",
            "a..b:80",
            "white space:80",
            "http://x:80",
        ] {
            let problem = resolve(bad).unwrap_err();
            assert!(
                problem.starts_with("is not IP:port or name:port"),
                "{bad}: {problem}"
            );
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_one_clear_problem() {
        let problem = resolve("no-such-host.invalid:80").unwrap_err();
        assert!(problem.starts_with("does not resolve"), "{problem}");
    }
}
