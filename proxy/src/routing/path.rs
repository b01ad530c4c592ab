//! The path a route is matched against: the one the upstream will act on. Without this,
//! `/public/../internal/x`, `//internal/x` or `/%69nternal/x` would slip past a
//! `prefix = "/internal/"` route that an upstream normalizing the path then serves.

use std::borrow::Cow;

/// `path` with unreserved percent-escapes decoded, empty segments collapsed and dot
/// segments removed (RFC 3986 2.3, 5.2.4). Most paths need none of it and are borrowed.
pub fn normalized(path: &str) -> Cow<'_, str> {
    let plain = !path.contains(['%', '.']) && !path.contains("//");
    if plain {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if i != last => {}
            segment => out.push(segment),
        }
    }
    // A path that ended in a dot segment names a directory.
    let trailing = matches!(segments[last], "." | "..") && !out.is_empty();
    let mut joined = String::with_capacity(decoded.len());
    for segment in &out {
        joined.push('/');
        joined.push_str(segment);
    }
    if trailing || joined.is_empty() {
        joined.push('/');
    }
    Cow::Owned(joined)
}

/// Decodes `%XX` where XX is an unreserved character; other escapes stay as written.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match escaped {
            Some(byte) => {
                out.push(byte as char);
                i += 3;
            }
            None => {
                // The path is ASCII (hyper refuses anything else in a request target).
                out.push(bytes[i] as char);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn paths_are_read_as_an_upstream_reads_them() {
        for (given, read) in [
            ("/api/users", "/api/users"),
            ("/public/../internal/x", "/internal/x"),
            ("//internal//x", "/internal/x"),
            ("/%69nternal/x", "/internal/x"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../etc", "/etc"),
            ("/", "/"),
            ("/%2F/x", "/%2F/x"),
            ("/file.txt", "/file.txt"),
        ] {
            assert_eq!(normalized(given), read, "{given}");
        }
    }
}
