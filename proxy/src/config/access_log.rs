//! `[proxy.access_log]`: one line per exchange, off the request path. `access_log = true`
//! (the older spelling) is JSON lines on stdout.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug)]
pub enum AccessLogSection {
    Flag(bool),
    Table(AccessLogTable),
}

/// `true`/`false`, or a table whose own problems (an unknown key) are named.
impl<'de> Deserialize<'de> for AccessLogSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = AccessLogSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a table { to, path, format }")
            }
            fn visit_bool<E>(self, on: bool) -> Result<AccessLogSection, E> {
                Ok(AccessLogSection::Flag(on))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<AccessLogSection, M::Error> {
                let table =
                    AccessLogTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(AccessLogSection::Table(table))
            }
        }
        d.deserialize_any(Either)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogTable {
    /// "off", "stdout" or "file".
    pub to: String,
    pub path: Option<PathBuf>,
    /// "json" (the default) or "text".
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTo {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    /// One line of `key=value` pairs, values quoted where they need it.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub to: AccessLogTo,
    pub format: AccessLogFormat,
}

impl AccessLogSection {
    /// The settings (`None`: off), or what is wrong. A relative `path` is taken from the
    /// working directory, as `state.dir` is.
    pub fn settings(&self) -> Result<Option<AccessLogSettings>, String> {
        let table = match self {
            AccessLogSection::Flag(false) => return Ok(None),
            AccessLogSection::Flag(true) => {
                return Ok(Some(AccessLogSettings {
                    to: AccessLogTo::Stdout,
                    format: AccessLogFormat::Json,
                }))
            }
            AccessLogSection::Table(table) => table,
        };
        let format = match table.format.as_deref() {
            None | Some("json") => AccessLogFormat::Json,
            Some("text") => AccessLogFormat::Text,
            Some(other) => {
                return Err(format!(
                    "proxy.access_log.format: {other:?} is not \"json\" or \"text\""
                ))
            }
        };
        let to = match (table.to.as_str(), &table.path) {
            ("off", None) => return Ok(None),
            ("stdout", None) => AccessLogTo::Stdout,
            ("file", Some(path)) => AccessLogTo::File(path.clone()),
            ("file", None) => return Err("proxy.access_log: to = \"file\" needs a path".into()),
            ("off" | "stdout", Some(_)) => {
                return Err("proxy.access_log.path goes only with to = \"file\"".into())
            }
            (other, _) => {
                return Err(format!(
                    "proxy.access_log.to: {other:?} is not \"off\", \"stdout\" or \"file\""
                ))
            }
        };
        Ok(Some(AccessLogSettings { to, format }))
    }
}
