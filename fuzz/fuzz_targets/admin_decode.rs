//! The admin command decoders: the first line is a per-verb path's verb, the rest the JSON
//! body a stranger sends, read both as that path's body and as an `Order` for
//! `POST /commands`. A clear error or a command, never a panic; an order decoded from JSON
//! encodes back to the same order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::admin::api::ChangeRequest;
use switchyard::admin::rest;
use switchyard::control::command::Order;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (verb, body) = data.split_at(split);
    let verb = String::from_utf8_lossy(verb);
    if let Ok(request) = serde_json::from_slice::<ChangeRequest>(body) {
        let _ = rest::change(&verb, &request);
    }
    let _ = rest::rollout_action(&verb);
    if let Ok(order) = serde_json::from_slice::<Order>(body) {
        let encoded = serde_json::to_vec(&order).expect("an order encodes");
        let decoded: Order = serde_json::from_slice(&encoded).expect("and decodes back");
        assert_eq!(decoded, order);
    }
});
