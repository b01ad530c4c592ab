//! The routing pick on any request head: routes (path as the upstream reads it), host
//! lookup, forced matches (header, cookie, query), sticky cookie and header, weights.
//! Always a version of the service, and the same one for the same head.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use switchyard::config::Config;
use switchyard::control::Controller;
use switchyard::dataplane::proxy::DataPlane;

const CONFIG: &str = r#"
[proxy]
listen = "127.0.0.1:0"

[services.shop]
hosts = ["shop.example.com"]
stable = "blue"
weights = { blue = 999, canary = 1 }
sticky = { cookie = "sy_user" }

[services.shop.versions.blue]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9011"]

[services.shop.versions.canary]
endpoints = ["127.0.0.1:9003"]

[[services.shop.match]]
header = "x-canary"
value = "1"
version = "canary"

[[services.shop.match]]
query = "preview"
regex = "^y"
version = "canary"

[[routes]]
path = { prefix = "/api/" }
service = "api"

[[routes]]
host = "*.example.com"
path = { regex = "^/v[0-9]+/" }
methods = ["GET"]
service = "shop"

[services.api]
stable = "green"
weights = { green = 50, blue = 30, canary = 20 }
sticky = { header = "x-user-id" }

[services.api.versions.green]
endpoints = ["127.0.0.1:9101"]

[services.api.versions.blue]
endpoints = ["127.0.0.1:9102"]

[services.api.versions.canary]
endpoints = ["127.0.0.1:9103"]
"#;

fn plane() -> &'static Arc<DataPlane> {
    static PLANE: OnceLock<(Arc<DataPlane>, tempfile::TempDir)> = OnceLock::new();
    &PLANE
        .get_or_init(|| {
            let state = tempfile::tempdir().expect("temp dir");
            let mut config = Config::parse(Path::new("fuzz.toml"), CONFIG).expect("valid");
            config.state_dir = state.path().to_path_buf();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let controller = runtime
                .block_on(Controller::open(config, "fuzz.toml".into(), 1, false))
                .expect("controller");
            let plane = controller.plane.clone();
            // The controller's tasks are not needed: the table is all the pick reads.
            std::mem::forget(controller);
            std::mem::forget(runtime);
            (plane, state)
        })
        .0
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0);
    let host = fields.next().map(String::from_utf8_lossy);
    let mut headers = HeaderMap::new();
    for name in ["cookie", "x-canary", "x-user-id", "cookie"] {
        if let Some(value) = fields.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let uri = fields
        .next()
        .and_then(|target| http::Uri::try_from(target).ok())
        .unwrap_or_else(|| http::Uri::from_static("/"));
    let table = plane().table.load();
    let Some(service) = table.service_for(host.as_deref(), &http::Method::GET, &uri, &headers)
    else {
        return;
    };
    let first = service.pick(&headers, &uri).version();
    assert!(first < service.versions.len());
    let sticky = headers.contains_key("x-user-id") && &*service.name == "api"
        || headers.get("x-canary").is_some_and(|v| v == "1") && &*service.name == "shop";
    if sticky {
        assert_eq!(
            service.pick(&headers, &uri).version(),
            first,
            "a sticky pick moved"
        );
    }
});
