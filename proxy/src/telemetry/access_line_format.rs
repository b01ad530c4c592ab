//! An access log line, written by hand into the writer's one reused buffer: JSON (one
//! object a line) or text (`key=value` pairs, keys in alphabetical order). No per-line
//! allocation: integers go through `itoa`, the timestamp's date and time of day are
//! formatted once per second, strings are escaped in runs.
//!
//! serde_json did this before, at about 13,000 instructions a line (callgrind), half of
//! what the proxy spends on a whole request; the format it wrote is kept to the byte.

use super::exchange::Entry;
use crate::config::access_log::AccessLogFormat;
use http::{Method, Version};
use std::io::Write as _;
use std::net::SocketAddr;

/// One field's value, as the line writes it.
enum Value<'a> {
    /// Escaped as JSON needs it.
    Text(&'a str),
    /// Known to hold nothing JSON escapes (a method, a request id, an address, a name
    /// of switchyard's own): written as it is.
    Token(&'a str),
    Number(u64),
    /// Microseconds, written as milliseconds with up to three decimals.
    Millis(u64),
    /// Unix milliseconds, written as RFC 3339.
    Time(u64),
    Endpoint(SocketAddr),
    /// 16 bytes, written as 32 lowercase hex digits.
    TraceId(&'a [u8; 16]),
    Null,
}

const FIELDS: usize = 19;

/// The JSON object's keys, in the order they are written.
const KEYS: [&str; FIELDS] = [
    "start",
    "duration_ms",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "end",
    "bytes_in",
    "bytes_out",
    "upstream_ms",
    "service",
    "version",
    "endpoint",
    "revision",
    "request_id",
    "trace_id",
    "client",
    "user_agent",
];

/// What goes before each JSON value: `{"start":`, then `,"duration_ms":` and so on
/// (keys are plain words: nothing to escape).
const JSON_PREFIXES: [&str; FIELDS] = [
    r#"{"start":"#,
    r#","duration_ms":"#,
    r#","method":"#,
    r#","authority":"#,
    r#","path":"#,
    r#","protocol":"#,
    r#","status":"#,
    r#","end":"#,
    r#","bytes_in":"#,
    r#","bytes_out":"#,
    r#","upstream_ms":"#,
    r#","service":"#,
    r#","version":"#,
    r#","endpoint":"#,
    r#","revision":"#,
    r#","request_id":"#,
    r#","trace_id":"#,
    r#","client":"#,
    r#","user_agent":"#,
];

/// The text format's order (indexes into `KEYS`): alphabetical, as it has always been.
const TEXT_ORDER: [usize; FIELDS] = [
    3, 8, 9, 17, 1, 7, 13, 2, 4, 5, 15, 14, 11, 0, 6, 16, 10, 18, 12,
];

/// Formats lines; keeps the current second's `YYYY-MM-DDTHH:MM:SS.`.
#[derive(Default)]
pub struct LineWriter {
    second: Option<(u64, String)>,
}

impl LineWriter {
    /// Appends `entry`'s line, newline included, to `out`.
    pub fn write(&mut self, entry: &Entry, format: AccessLogFormat, out: &mut Vec<u8>) {
        let values = values(entry);
        match format {
            AccessLogFormat::Json => {
                for (prefix, value) in JSON_PREFIXES.iter().zip(&values) {
                    out.extend_from_slice(prefix.as_bytes());
                    self.json_value(value, out);
                }
                out.extend_from_slice(b"}\n");
            }
            AccessLogFormat::Text => {
                for (position, &index) in TEXT_ORDER.iter().enumerate() {
                    if position > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(KEYS[index].as_bytes());
                    out.push(b'=');
                    self.text_value(&values[index], out);
                }
                out.push(b'\n');
            }
        }
    }

    fn json_value(&mut self, value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Text(text) => json_string(text, out),
            Value::Null => out.extend_from_slice(b"null"),
            Value::Number(_) | Value::Millis(_) => self.bare(value, out),
            Value::Token(_) | Value::Time(_) | Value::Endpoint(_) | Value::TraceId(_) => {
                out.push(b'"');
                self.bare(value, out);
                out.push(b'"');
            }
        }
    }

    /// A string is bare unless empty or holding a space, a quote or `=` (then JSON);
    /// `null` is `-`.
    fn text_value(&mut self, value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Text(text) | Value::Token(text)
                if text.is_empty() || text.contains([' ', '"', '=']) =>
            {
                json_string(text, out)
            }
            Value::Text(text) | Value::Token(text) => out.extend_from_slice(text.as_bytes()),
            Value::Null => out.push(b'-'),
            other => self.bare(other, out),
        }
    }

    /// Numbers and the values that never need escaping.
    fn bare(&mut self, value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Number(number) => number_into(*number, out),
            Value::Millis(micros) => millis_into(*micros, out),
            Value::Time(unix_ms) => self.time_into(*unix_ms, out),
            Value::Endpoint(addr) => endpoint_into(*addr, out),
            Value::TraceId(id) => hex_into(id, out),
            Value::Text(text) | Value::Token(text) => out.extend_from_slice(text.as_bytes()),
            Value::Null => out.extend_from_slice(b"null"),
        }
    }

    fn time_into(&mut self, unix_ms: u64, out: &mut Vec<u8>) {
        let second = unix_ms / 1000;
        let prefix = match &self.second {
            Some((cached, prefix)) if *cached == second => prefix,
            _ => {
                let mut whole = crate::clock::rfc3339_millis(second * 1000);
                // Keeps the dot, drops "000Z": the milliseconds are the line's own.
                whole.truncate(whole.len() - 4);
                &self.second.insert((second, whole)).1
            }
        };
        out.extend_from_slice(prefix.as_bytes());
        let ms = unix_ms % 1000;
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// The fields of `entry`, in `KEYS`' order. Values that could serialise to JSON are
/// numbers in JSON; the others (time, endpoint, trace id) are strings.
fn values(entry: &Entry) -> [Value<'_>; FIELDS] {
    [
        Value::Time(crate::clock::unix_ms(entry.start)),
        Value::Millis(micros(entry.duration)),
        // An extension method is a token too (`http` checks).
        token(entry.method.as_ref().map(Method::as_str)),
        text(entry.authority()),
        text(entry.target()),
        token(entry.protocol.map(|protocol| match protocol {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        })),
        Value::Number(entry.status.into()),
        Value::Token(entry.end),
        entry.bytes_in.map_or(Value::Null, Value::Number),
        Value::Number(entry.bytes_out),
        entry
            .upstream
            .map_or(Value::Null, |d| Value::Millis(micros(d))),
        text(entry.service.as_deref()),
        text(entry.version.as_deref()),
        entry.endpoint.map_or(Value::Null, Value::Endpoint),
        Value::Number(entry.revision),
        // Only a token the client sent (`request_id::fit`), or one made here.
        Value::Token(entry.request_id()),
        entry.trace_id.as_ref().map_or(Value::Null, Value::TraceId),
        Value::Token(entry.client()),
        text(entry.user_agent()),
    ]
}

fn text(value: Option<&str>) -> Value<'_> {
    value.map_or(Value::Null, Value::Text)
}

fn token(value: Option<&str>) -> Value<'_> {
    value.map_or(Value::Null, Value::Token)
}

/// Rounded to the nearest microsecond.
fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from((duration.as_nanos() + 500) / 1000).unwrap_or(u64::MAX)
}

fn number_into(number: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// `1234` µs as `1.234`, `1000` as `1.0`, `1230` as `1.23`: what serde_json wrote for the
/// same milliseconds as an `f64`.
fn millis_into(micros: u64, out: &mut Vec<u8>) {
    number_into(micros / 1000, out);
    let fraction = micros % 1000;
    let decimals = [
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let kept = match fraction {
        0 => 1,
        f if f % 100 == 0 => 1,
        f if f % 10 == 0 => 2,
        _ => 3,
    };
    out.extend_from_slice(&decimals[..=kept]);
}

fn endpoint_into(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            // "255.255.255.255:65535" at most; one copy into `out`.
            let mut text = [0u8; 21];
            let mut len = 0;
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                len += digits(octet.into(), &mut text[len..]);
            }
            text[len] = b':';
            len += 1;
            len += digits(v4.port(), &mut text[len..]);
            out.extend_from_slice(&text[..len]);
        }
        // Rare enough for the formatter (and writing to a Vec cannot fail).
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes `number` in decimal at the start of `to` (room for five digits); returns how
/// many digits it took.
fn digits(number: u16, to: &mut [u8]) -> usize {
    let mut reversed = [0u8; 5];
    let mut rest = number;
    let mut count = 0;
    loop {
        reversed[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for (slot, digit) in to.iter_mut().zip(reversed[..count].iter().rev()) {
        *slot = *digit;
    }
    count
}

fn hex_into(bytes: &[u8; 16], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out.extend_from_slice(&text);
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped as
/// serde_json escapes them; everything else (UTF-8 included) as it is.
fn json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.push(b'"');
    // Nearly every value has nothing to escape: one pass without early exit (which the
    // compiler can vectorise) says so.
    let plain = !bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut run = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escaped);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::exchange::{RequestText, TextField};
    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    /// The README's example exchange.
    fn example() -> Entry {
        let mut entry = Entry::refused(HeaderValue::from_static("127.0.0.1"), false, 1);
        entry.start = UNIX_EPOCH + Duration::from_millis(1_796_222_821_512);
        entry.duration = Duration::from_micros(1430);
        entry.method = Some(Method::GET);
        entry.protocol = Some(Version::HTTP_11);
        entry.status = 200;
        entry.end = "completed";
        entry.bytes_out = 13;
        entry.upstream = Some(Duration::from_nanos(1_210_400));
        entry.service = Some("shop".into());
        entry.version = Some("blue".into());
        entry.endpoint = Some("10.0.0.7:8080".parse().unwrap());
        entry.trace_id = Some(0x4bf92f3577b34da6a3ce929d0e0e4736_u128.to_be_bytes());
        let mut text = RequestText::default();
        let ok = |text| Some(Ok::<_, ()>(text));
        text.set(TextField::Authority, ok("shop.example.com"));
        text.set(TextField::Target, ok("/cart?item=7"));
        text.set(TextField::RequestId, ok("req-42"));
        text.set(TextField::UserAgent, ok("probe/1.0"));
        entry.text = text;
        entry
    }

    fn line(entry: &Entry, format: AccessLogFormat) -> String {
        let mut out = Vec::new();
        LineWriter::default().write(entry, format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_line_is_the_documented_one_to_the_byte() {
        assert_eq!(
            line(&example(), AccessLogFormat::Json),
            concat!(
                r#"{"start":"2026-12-02T14:47:01.512Z","duration_ms":1.43,"method":"GET","#,
                r#""authority":"shop.example.com","path":"/cart?item=7","protocol":"HTTP/1.1","#,
                r#""status":200,"end":"completed","bytes_in":null,"bytes_out":13,"upstream_ms":1.21,"#,
                r#""service":"shop","version":"blue","endpoint":"10.0.0.7:8080","revision":1,"#,
                r#""request_id":"req-42","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","#,
                r#""client":"127.0.0.1","user_agent":"probe/1.0"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_text_line_quotes_what_needs_it_and_writes_null_as_a_dash() {
        let mut entry = example();
        let mut text = RequestText::default();
        text.set(TextField::Target, Some(Ok::<_, ()>("/a=b")));
        text.set(TextField::RequestId, Some(Ok::<_, ()>("r")));
        text.set(TextField::UserAgent, Some(Err(())));
        entry.text = text;
        entry.bytes_in = Some(0);
        assert_eq!(
            line(&entry, AccessLogFormat::Text),
            concat!(
                "authority=- bytes_in=0 bytes_out=13 client=127.0.0.1 duration_ms=1.43 ",
                "end=completed endpoint=10.0.0.7:8080 method=GET path=\"/a=b\" ",
                "protocol=HTTP/1.1 request_id=r revision=1 service=shop ",
                "start=2026-12-02T14:47:01.512Z status=200 ",
                "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 upstream_ms=1.21 ",
                "user_agent=\"(not text)\" version=blue\n"
            )
        );
    }

    #[test]
    fn milliseconds_read_as_serde_json_wrote_the_same_f64() {
        for micros in [
            0,
            1,
            5,
            10,
            100,
            999,
            1000,
            1001,
            1230,
            1234,
            60_000,
            123_456_789,
        ] {
            let mut out = Vec::new();
            millis_into(micros, &mut out);
            let old = serde_json::to_string(&(micros as f64 / 1e3)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), old, "{micros}");
        }
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let hostile = "a\"b\\c\nd\re\tf\u{8}\u{c}\u{0}\u{1f}\u{7f} é ✓ </script>";
        let mut out = Vec::new();
        json_string(hostile, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(hostile).unwrap()
        );
    }

    #[test]
    fn json_prefixes_name_the_keys_in_order() {
        for (i, (prefix, key)) in JSON_PREFIXES.iter().zip(KEYS).enumerate() {
            let open = if i == 0 { "{" } else { "," };
            assert_eq!(*prefix, format!("{open}\"{key}\":"));
        }
    }

    #[test]
    fn the_text_order_is_alphabetical_and_complete() {
        let ordered: Vec<&str> = TEXT_ORDER.iter().map(|&i| KEYS[i]).collect();
        let mut sorted = KEYS.to_vec();
        sorted.sort_unstable();
        assert_eq!(ordered, sorted);
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds_across_seconds() {
        let mut writer = LineWriter::default();
        for ms in [
            1_714_564_800_999,
            1_714_564_801_000,
            1_714_564_801_007,
            951_782_400_123,
        ] {
            let mut out = Vec::new();
            writer.time_into(ms, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                crate::clock::rfc3339_millis(ms)
            );
        }
    }

    #[test]
    fn endpoints_as_std_writes_them() {
        for addr in ["10.0.0.7:8080", "127.0.0.1:0", "[::1]:443", "[fe80::1]:80"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            endpoint_into(addr, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }
}
