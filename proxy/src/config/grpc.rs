//! gRPC status codes: their names, and the set a service counts as the version's failure
//! (`grpc_error_codes`).

use serde::Deserialize;

/// The canonical codes, by number (grpc/doc/statuscodes.md).
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const UNKNOWN: u8 = 2;
pub const DEADLINE_EXCEEDED: u8 = 4;
pub const UNIMPLEMENTED: u8 = 12;
pub const INTERNAL: u8 = 13;
pub const UNAVAILABLE: u8 = 14;
pub const DATA_LOSS: u8 = 15;
pub const CANCELLED: u8 = 1;

/// A set of gRPC status codes (0 to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodes(u32);

impl Default for GrpcCodes {
    /// What the server, not the caller, is to blame for.
    fn default() -> Self {
        GrpcCodes::of(&[UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS])
    }
}

impl GrpcCodes {
    pub fn of(codes: &[u8]) -> GrpcCodes {
        GrpcCodes(codes.iter().fold(0, |set, &code| set | 1 << code))
    }

    /// A code outside 0..=16 is treated as UNKNOWN, as gRPC clients do.
    pub fn contains(self, code: u8) -> bool {
        let code = if code as usize >= GRPC_CODE_NAMES.len() {
            UNKNOWN
        } else {
            code
        };
        self.0 & (1 << code) != 0
    }
}

/// One entry of `grpc_error_codes` as written: a number or a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GrpcCodeEntry {
    Number(i64),
    Name(String),
}

impl GrpcCodeEntry {
    /// The code, or why the entry names none.
    pub fn code(&self) -> Result<u8, String> {
        let known = GRPC_CODE_NAMES.len() as i64;
        match self {
            GrpcCodeEntry::Number(n) if (0..known).contains(n) => Ok(*n as u8),
            GrpcCodeEntry::Number(n) => Err(format!("{n} is not a gRPC status code (0 to 16)")),
            GrpcCodeEntry::Name(name) => GRPC_CODE_NAMES
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name))
                .map(|code| code as u8)
                .ok_or_else(|| {
                    format!("{name:?} is not a gRPC status code name (e.g. \"UNAVAILABLE\")")
                }),
        }
    }
}

/// The name of a code, "UNKNOWN" for codes past the known ones.
pub fn code_name(code: u8) -> &'static str {
    GRPC_CODE_NAMES
        .get(code as usize)
        .copied()
        .unwrap_or(GRPC_CODE_NAMES[UNKNOWN as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_the_servers_failures() {
        let set = GrpcCodes::default();
        for code in [2, 4, 13, 14, 15] {
            assert!(set.contains(code), "{code}");
        }
        for code in [0, 1, 3, 5, 7, 12, 16] {
            assert!(!set.contains(code), "{code}");
        }
        assert!(set.contains(200), "an unknown code counts as UNKNOWN");
    }

    #[test]
    fn entries_by_number_or_name() {
        assert_eq!(GrpcCodeEntry::Number(14).code(), Ok(14));
        assert_eq!(GrpcCodeEntry::Name("not_found".into()).code(), Ok(5));
        assert!(GrpcCodeEntry::Number(17).code().is_err());
        assert!(GrpcCodeEntry::Number(-1).code().is_err());
        assert!(GrpcCodeEntry::Name("BROKEN".into()).code().is_err());
    }
}
