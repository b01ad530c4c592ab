//! What the fields of a head say about its framing and its connection, gathered in one
//! walk over them: the same rules for a request coming in and a response coming back.

/// Facts about framing and persistence gathered while walking the fields.
#[derive(Debug, Default)]
pub struct FieldFacts {
    pub length: Option<u64>,
    /// A Content-Length that is no number, or two that disagree.
    pub bad_length: bool,
    /// A Content-Length value that is a list ("5, 5").
    pub length_list: bool,
    pub transfer_encoding: bool,
    pub chunked_last: bool,
    /// Transfer-Encoding names a coding besides chunked (gzip...): it must reach the
    /// client, which the proxy re-frames, as a content coding.
    pub other_codings: bool,
    pub close: bool,
    pub keep_alive: bool,
    /// `Connection` names fields besides keep-alive and close.
    pub names_fields: bool,
    /// `Connection` names `upgrade`.
    pub upgrade: bool,
    pub expect_continue: bool,
    pub hosts: u8,
}

/// The fields the codec reads or drops, told apart by their length before their bytes:
/// most fields are none of them, and cost one `match` on the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    Expect,
    Date,
    /// Another field of one connection only (RFC 9110 7.6.1): Keep-Alive, TE, Upgrade...
    OtherHopByHop,
    Other,
}

impl FieldKind {
    pub fn of(name: &[u8]) -> FieldKind {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            14 if is("content-length") => FieldKind::ContentLength,
            17 if is("transfer-encoding") => FieldKind::TransferEncoding,
            10 if is("connection") => FieldKind::Connection,
            4 if is("host") => FieldKind::Host,
            4 if is("date") => FieldKind::Date,
            6 if is("expect") => FieldKind::Expect,
            10 if is("keep-alive") => FieldKind::OtherHopByHop,
            2 if is("te") => FieldKind::OtherHopByHop,
            7 if is("trailer") || is("upgrade") => FieldKind::OtherHopByHop,
            16 if is("proxy-connection") => FieldKind::OtherHopByHop,
            18 if is("proxy-authenticate") => FieldKind::OtherHopByHop,
            19 if is("proxy-authorization") => FieldKind::OtherHopByHop,
            _ => FieldKind::Other,
        }
    }

    /// One of `super::HOP_BY_HOP`.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            FieldKind::Connection | FieldKind::TransferEncoding | FieldKind::OtherHopByHop
        )
    }
}

impl FieldFacts {
    pub fn note(&mut self, kind: FieldKind, value: &[u8]) {
        if kind == FieldKind::ContentLength {
            self.length_list |= value.contains(&b',');
            match (parse_length(value), self.length) {
                (Some(length), None) => self.length = Some(length),
                (Some(length), Some(seen)) if length == seen => {}
                _ => self.bad_length = true,
            }
        } else if kind == FieldKind::TransferEncoding {
            self.transfer_encoding = true;
            for coding in value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                let nothing = coding.is_empty() || coding.eq_ignore_ascii_case(b"identity");
                self.other_codings |= !chunked && !nothing;
                self.chunked_last = chunked;
            }
        } else if kind == FieldKind::Connection {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.names_fields |= !(close || keep_alive || token.is_empty());
            }
        } else if kind == FieldKind::Host {
            self.hosts = self.hosts.saturating_add(1);
        } else if kind == FieldKind::Expect {
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
}

/// A content-length value: digits only, or a list of one value repeated ("5, 5").
pub fn parse_length(value: &[u8]) -> Option<u64> {
    // The usual value is read whole, without splitting it first.
    if let Some(length) = digits(value) {
        return Some(length);
    }
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let length = digits(part.trim_ascii())?;
        match found {
            Some(seen) if seen != length => return None,
            _ => found = Some(length),
        }
    }
    found
}

/// 1 to 19 ASCII digits (19 never overflow a `u64`) as a number.
fn digits(text: &[u8]) -> Option<u64> {
    let number = !text.is_empty() && text.len() <= 19 && text.iter().all(u8::is_ascii_digit);
    number.then(|| {
        text.iter()
            .fold(0, |length, &digit| length * 10 + u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_or_a_list_of_one_value() {
        let cases: [(&[u8], Option<u64>); 11] = [
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"18446744073709551615", None), // 20 digits: more than a length may have
            (b"9999999999999999999", Some(9_999_999_999_999_999_999)),
            (b"5, 5", Some(5)),
            (b" 5", Some(5)),
            (b"5, 6", None),
            (b"", None),
            (b"+5", None),
            (b"-1", None),
            (b"0x10", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_length(value),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn kinds_know_every_hop_by_hop_field_and_no_other() {
        for name in &crate::http1::HOP_BY_HOP {
            let upper = name.as_str().to_ascii_uppercase();
            assert!(FieldKind::of(upper.as_bytes()).is_hop_by_hop(), "{name}");
        }
        for name in [
            "content-type",
            "host",
            "date",
            "expect",
            "x-te",
            "upgrades",
            "via",
        ] {
            assert!(!FieldKind::of(name.as_bytes()).is_hop_by_hop(), "{name}");
        }
        assert_eq!(FieldKind::of(b"Content-Length"), FieldKind::ContentLength);
        assert_eq!(FieldKind::of(b"DATE"), FieldKind::Date);
    }
}
