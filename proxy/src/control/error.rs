//! Why the control plane refused a command: a typed answer that only the admin layer turns
//! into an HTTP status.

/// A refused command. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A service, version or revision that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Input that is wrong whatever the state (weights all zero, ...).
    #[error("{0}")]
    Invalid(String),
    /// Refused by the state it meets: no change, frozen, latched, nothing to promote, ...
    #[error("{0}")]
    Refused(String),
    /// The change could not be recorded (the journal or a state file cannot be written);
    /// routing is unchanged.
    #[error("{0}")]
    NotRecorded(String),
    /// The routing moved between a pre-flight gate's checks and the change; nothing changed.
    #[error("the routing changed while the checks ran; nothing changed, try again")]
    Moved,
    /// In a fleet: this instance has not applied the fleet's log as far as it goes (just
    /// started, or NATS out of reach since it started), so it cannot answer for it.
    #[error("{0}")]
    NotCaughtUp(String),
    /// The change gives traffic to versions (service, version) whose checks must pass
    /// first; the requester runs them and asks again with their reports.
    #[error("the checks of {} must run first", due(.0))]
    ChecksDue(Vec<(String, String)>),
    /// The control plane is stopping.
    #[error("the control plane has stopped")]
    Stopped,
}

fn due(versions: &[(String, String)]) -> String {
    let named: Vec<String> = versions.iter().map(|(s, v)| format!("{s}/{v}")).collect();
    named.join(", ")
}
