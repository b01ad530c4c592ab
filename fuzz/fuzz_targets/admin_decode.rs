//! The admin command decoder: the first line is the endpoint's verb, the rest the JSON
//! body a stranger sends. A clear error or a command, never a panic; a command decoded
//! from JSON encodes back to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::admin::api::{self, ChangeRequest};
use switchyard::control::command::Command;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (verb, body) = data.split_at(split);
    let verb = String::from_utf8_lossy(verb);
    if let Ok(request) = serde_json::from_slice::<ChangeRequest>(body) {
        let _ = api::change(&verb, &request);
    }
    let _ = api::rollout_action(&verb);
    if let Ok(command) = serde_json::from_slice::<Command>(body) {
        let encoded = serde_json::to_vec(&command).expect("a command encodes");
        let decoded: Command = serde_json::from_slice(&encoded).expect("and decodes back");
        assert_eq!(decoded, command);
        let _ = api::route(&command);
    }
});
