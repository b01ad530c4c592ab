//! W3C trace context (`traceparent`, `tracestate`) and the sampling decision: a caller's
//! sampled flag is followed, a new trace is sampled by ratio over its id (OpenTelemetry's
//! `ParentBased(TraceIdRatioBased)`).

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A valid `traceparent`: `<version>-<32 hex>-<16 hex>-<2 hex>`, ids not all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let value = headers.get(&TRACEPARENT)?.to_str().ok()?;
        let mut parts = value.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; a later version may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let [version] = hex::<1>(version)?;
        let trace_id = hex::<16>(trace)?;
        let span_id = hex::<8>(parent)?;
        let [flags] = hex::<1>(flags)?;
        let valid = version != 0xff && trace_id != [0; 16] && span_id != [0; 8];
        valid.then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn header_value(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        write_hex(&self.span_id, &mut text[36..52]);
        text[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The ids of one recorded span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from its `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The caller's `tracestate`, kept as it came.
    pub trace_state: String,
}

/// `ParentBased(TraceIdRatioBased(ratio))`: the caller's decision when it sent one.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Trace ids whose low 63 bits fall under this are sampled.
    threshold: u64,
}

impl Sampler {
    pub fn new(ratio: f64) -> Sampler {
        Sampler {
            threshold: (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64,
        }
    }

    /// Decides for one request and sets its `traceparent` for the upstream: a sampled
    /// span becomes the upstream's parent; a new unsampled trace goes on unsampled; a
    /// caller's unsampled one passes through untouched. The span's ids when it is sampled.
    pub fn start(&self, headers: &mut HeaderMap) -> Option<SpanIds> {
        let caller = TraceParent::from_headers(headers);
        let trace_id = match &caller {
            Some(caller) if !caller.sampled => return None,
            Some(caller) => caller.trace_id,
            None => new_trace_id(),
        };
        let sampled = caller.is_some() || self.samples(&trace_id);
        let ours = TraceParent {
            trace_id,
            span_id: nonzero(fastrand::u64(..)).to_be_bytes(),
            sampled,
        };
        headers.insert(TRACEPARENT.clone(), ours.header_value());
        sampled.then(|| SpanIds {
            trace_id,
            span_id: ours.span_id,
            parent: caller.map(|caller| caller.span_id),
            trace_state: trace_state(headers),
        })
    }

    /// As OpenTelemetry's SDKs do: the trace id's last 8 bytes, less their top bit.
    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
        (low >> 1) < self.threshold
    }
}

/// The longest `tracestate` kept (W3C: 32 members, 512 characters is what a vendor must
/// propagate; past it a whole list may be dropped). A stranger's 60 KB list would
/// otherwise ride every span it forces into the exporter's queue.
const MAX_TRACE_STATE: usize = 512;

/// The `tracestate` list, several header lines joined as one; dropped when too long.
fn trace_state(headers: &HeaderMap) -> String {
    let parts: Vec<&str> = headers
        .get_all(&TRACESTATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let joined = parts.join(",");
    match joined.len() > MAX_TRACE_STATE {
        true => String::new(),
        false => joined,
    }
}

fn new_trace_id() -> [u8; 16] {
    let id = fastrand::u128(..);
    match id {
        0 => 1u128.to_be_bytes(),
        id => id.to_be_bytes(),
    }
}

fn nonzero(id: u64) -> u64 {
    id.max(1)
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

pub fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT.clone(), HeaderValue::from_static(traceparent));
        headers
    }

    #[test]
    fn only_valid_traceparents_are_read_and_they_write_back_the_same() {
        let parent = TraceParent::from_headers(&headers(CALLER)).expect("valid");
        assert!(parent.sampled);
        assert_eq!(parent.header_value(), CALLER);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(TraceParent::from_headers(&headers(bad)), None, "{bad}");
        }
    }

    #[test]
    fn the_callers_decision_wins_and_new_traces_go_by_ratio() {
        let never = Sampler::new(0.0);
        let always = Sampler::new(1.0);
        // A sampled caller is followed even at ratio 0; our span becomes the parent.
        let mut sampled = headers(CALLER);
        let ids = never.start(&mut sampled).expect("sampled");
        assert_eq!(to_hex(&ids.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ids.parent.map(|p| to_hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        let sent = TraceParent::from_headers(&sampled).expect("sent");
        assert_eq!((sent.span_id, sent.sampled), (ids.span_id, true));
        // An unsampled caller is followed even at ratio 1, and passed on untouched.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut passed = headers(unsampled);
        assert_eq!(always.start(&mut passed), None);
        assert_eq!(passed.get(&TRACEPARENT).expect("kept"), unsampled);
        // No caller: a new trace, its decision sent on.
        let mut fresh = HeaderMap::new();
        assert_eq!(never.start(&mut fresh), None);
        assert!(!TraceParent::from_headers(&fresh).expect("new").sampled);
        let mut fresh = HeaderMap::new();
        assert_eq!(always.start(&mut fresh).map(|ids| ids.parent), Some(None));
        // A ratio samples about its share of new traces.
        let tenth = Sampler::new(0.1);
        let taken = (0..10_000)
            .filter(|_| tenth.start(&mut HeaderMap::new()).is_some())
            .count();
        assert!((700..1300).contains(&taken), "{taken}");
    }
}
