//! Upstream endpoint addresses: `IP:port`, or `name:port` for containers and service
//! discovery by DNS. Reading a config only checks how an entry is written (`written`):
//! `check` never touches the network. A name is looked up by its owner, `control::resolve`,
//! when the config is applied (at start and at every reload), and each of its addresses
//! becomes an endpoint of its own.

use std::net::SocketAddr;

/// The address an entry is written as, none yet for a well-formed name, or what is wrong
/// with it: a lookup without the network.
pub fn written(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    host_and_port(text).map(|_| Vec::new())
}

/// A name entry's host and port, or what is wrong with it.
pub fn host_and_port(text: &str) -> Result<(&str, u16), String> {
    text.rsplit_once(':')
        .filter(|(host, _)| is_host_name(host))
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| "is not IP:port or name:port (e.g. \"127.0.0.1:8080\")".into())
}

/// Resolves one endpoint entry: `control::resolve::lookup`, `written`, or a stand-in in tests.
pub type Resolver = fn(&str) -> Result<Vec<SocketAddr>, String>;

/// The addresses of all of a version's entries, in order and without repeats;
/// `on_problem` hears (by index) about each entry that gave none.
pub fn resolve_all(
    entries: &[impl AsRef<str>],
    resolve: Resolver,
    mut on_problem: impl FnMut(usize, String),
) -> Vec<SocketAddr> {
    let mut all = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        // Only names go to the resolver; an address stands for itself.
        let entry = entry.as_ref();
        let addrs = match entry.parse::<SocketAddr>() {
            Ok(addr) => Ok(vec![addr]),
            Err(_) => resolve(entry),
        };
        match addrs {
            Ok(addrs) => addrs.into_iter().for_each(|addr| {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }),
            Err(problem) => on_problem(index, problem),
        }
    }
    all
}

/// True when the entry needs a resolver (a name, not an address).
pub fn is_name(entry: &str) -> bool {
    entry.parse::<SocketAddr>().is_err()
}

/// A host name: dot-separated labels of letters, digits, inner hyphens and underscores
/// (Docker Compose names containers `shop_blue_1`), with an optional final dot, whose
/// last label is not a number (as in the URL standard): "10.0.1" or "017.0.0.1" would
/// reach the system resolver as other addresses than the one meant, so they stay errors.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .or_else(|| last.strip_prefix("0X"))
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    !numeric
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_and_fully_qualified_names_are_names() {
        for name in [
            "shop_blue_1",
            "blue-1",
            "svc.cluster.local.",
            "3f2a9c1e0b2d",
        ] {
            assert!(is_host_name(name), "{name}");
        }
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
            "10.0.1:8080",
            "017.0.0.1:8080",
            "1.2.3.0x10:80",
        ] {
            let problem = written(bad).unwrap_err();
            assert!(
                problem.starts_with("is not IP:port or name:port"),
                "{bad}: {problem}"
            );
        }
    }

    #[test]
    fn only_names_reach_the_resolver_and_repeats_are_dropped() {
        fn stand_in(entry: &str) -> Result<Vec<SocketAddr>, String> {
            match entry {
                "pair:80" => Ok(vec![
                    "10.0.0.1:80".parse().unwrap(),
                    "10.0.0.2:80".parse().unwrap(),
                ]),
                _ => Err(format!("{entry} is unknown")),
            }
        }
        let mut problems = Vec::new();
        let addrs = resolve_all(&["10.0.0.2:80", "pair:80", "gone:80"], stand_in, |i, p| {
            problems.push((i, p))
        });
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.2:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        ];
        assert_eq!(addrs, expected);
        assert_eq!(problems, [(2, "gone:80 is unknown".to_string())]);
    }

    #[test]
    fn reading_an_entry_never_looks_a_name_up() {
        assert_eq!(written("no-such-host.invalid:80"), Ok(Vec::new()));
        assert_eq!(written("10.1.2.3:80").unwrap().len(), 1);
    }
}
