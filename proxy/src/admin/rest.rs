//! The per-verb paths (`PUT /services/{svc}/weights`, `POST /services/{svc}/switch`, ...,
//! `.../rollout/{action}`, `.../approve`, `/reload`): envelopes read into the same `Order`
//! that `POST /commands` takes. A path's verb is decoded by serde, as the body of
//! `/commands` is, so there is no second list of verbs.

use super::api::{ApiError, ChangeRequest};
use crate::control::command::{Change, Command, Order, RolloutAction};
use http::Method;
use serde::Serialize;
use serde_json::{Map, Value};

/// The change `verb` names, with `body`'s fields (a release's under `spec`, as in `Change`).
pub fn change(verb: &str, body: &ChangeRequest) -> Result<Change, ApiError> {
    let mut fields = Map::new();
    fields.insert("action".into(), verb.into());
    put(&mut fields, "weights", &body.weights);
    put(&mut fields, "version", &body.version);
    put(&mut fields, "to", &body.to);
    let mut spec = Map::new();
    put(&mut spec, "endpoints", &body.endpoints);
    put(&mut spec, "protocol", &body.protocol);
    put(&mut spec, "release", &body.release);
    put(&mut spec, "rollout", &Some(body.rollout).filter(|&on| on));
    let spec_given = !spec.is_empty();
    if spec_given {
        fields.insert("spec".into(), Value::Object(spec));
    }
    let decoded = serde_json::from_value(Value::Object(fields.clone()));
    match decoded {
        // A release without any of its fields: say which one it needs, not `spec`.
        Err(err) if !spec_given && err.to_string().starts_with("missing field `spec`") => {
            fields.insert("spec".into(), Value::Object(Map::new()));
            serde_json::from_value(Value::Object(fields)).map_err(|err| refused(verb, err))
        }
        decoded => decoded.map_err(|err| refused(verb, err)),
    }
}

/// The method a change's path takes: PUT for weights (it replaces them whole), else POST.
pub fn method_of(change: &Change) -> Method {
    match change {
        Change::Weights { .. } => Method::PUT,
        _ => Method::POST,
    }
}

/// The action of `.../rollout/{verb}`; approving has a path of its own.
pub fn rollout_action(verb: &str) -> Result<RolloutAction, ApiError> {
    match serde_json::from_value::<RolloutAction>(verb.into()) {
        Ok(RolloutAction::Approve) => Err(ApiError::NotFound(
            "approve has a path of its own: POST /services/{svc}/approve".into(),
        )),
        Ok(action) => Ok(action),
        Err(_) => Err(ApiError::NotFound(format!(
            "no rollout action {verb:?}: start, pause or resume"
        ))),
    }
}

/// `command`, with who and why from the body.
pub fn order(command: Command, body: &ChangeRequest) -> Order {
    Order {
        command,
        actor: body.actor.clone().unwrap_or_else(|| "api".into()),
        reason: body.reason.clone().unwrap_or_default(),
        force: body.force,
    }
}

/// Refuses a body with fields besides actor and reason (and `force`, where a pre-flight
/// gate may refuse the command).
pub fn only_who_and_why(what: &str, body: &ChangeRequest, gated: bool) -> Result<(), ApiError> {
    let who_and_why = ChangeRequest {
        actor: body.actor.clone(),
        reason: body.reason.clone(),
        force: body.force && gated,
        ..ChangeRequest::default()
    };
    match *body == who_and_why {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!(
            "{what} take only actor and reason{}",
            if gated { " (and force)" } else { "" }
        ))),
    }
}

fn put<T: Serialize>(fields: &mut Map<String, Value>, key: &str, value: &Option<T>) {
    if let Some(value) = value.as_ref().and_then(|v| serde_json::to_value(v).ok()) {
        fields.insert(key.into(), value);
    }
}

/// An unknown verb is a path that does not exist; anything else, a body that does not fit.
fn refused(verb: &str, err: serde_json::Error) -> ApiError {
    // serde's wording for a tag that names no variant; the only way it tells that case.
    match err.to_string().starts_with("unknown variant") {
        true => ApiError::NotFound(format!("no such endpoint: no change {verb:?} ({err})")),
        false => ApiError::BadRequest(format!("{verb}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_path_and_its_body_are_the_change_commands_decode() {
        let body = ChangeRequest {
            version: Some("green".into()),
            ..ChangeRequest::default()
        };
        let switch = Change::Switch {
            version: "green".into(),
        };
        assert_eq!(change("switch", &body).unwrap(), switch);
        assert_eq!(method_of(&switch), Method::POST);
        let weights = ChangeRequest {
            weights: Some(BTreeMap::from([("blue".into(), 1)])),
            ..ChangeRequest::default()
        };
        assert_eq!(
            method_of(&change("weights", &weights).unwrap()),
            Method::PUT
        );
        let release = ChangeRequest {
            version: Some("v2".into()),
            endpoints: Some(vec!["10.0.0.7:80".into()]),
            rollout: true,
            ..ChangeRequest::default()
        };
        let Change::Release { version, spec } = change("release", &release).unwrap() else {
            panic!("not a release");
        };
        assert_eq!((version.as_str(), spec.rollout), ("v2", true));
        assert_eq!(spec.endpoints, ["10.0.0.7:80"]);
    }

    #[test]
    fn a_path_refuses_what_its_change_does_not_take() {
        let version = ChangeRequest {
            version: Some("canary".into()),
            ..ChangeRequest::default()
        };
        let cases = [
            ("weights", &version, "unknown field `version`"),
            ("promote", &version, "unknown field `version`"),
            (
                "weights",
                &ChangeRequest::default(),
                "missing field `weights`",
            ),
            ("release", &version, "missing field `endpoints`"),
        ];
        for (verb, body, expected) in cases {
            let err = change(verb, body).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{verb}: {err:?}");
            assert!(err.to_string().contains(expected), "{verb}: {err}");
        }
        let unknown = change("explode", &ChangeRequest::default()).unwrap_err();
        assert!(matches!(unknown, ApiError::NotFound(_)), "{unknown:?}");
        assert!(
            unknown.to_string().starts_with("no such endpoint"),
            "{unknown}"
        );
    }

    #[test]
    fn rollout_paths_name_start_pause_and_resume() {
        assert_eq!(rollout_action("pause").unwrap(), RolloutAction::Pause);
        for refused in ["approve", "explode", "Start"] {
            assert!(matches!(
                rollout_action(refused),
                Err(ApiError::NotFound(_))
            ));
        }
    }
}
