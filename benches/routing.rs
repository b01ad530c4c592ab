//! The per-request routing decision: one table load, version pick, endpoint pick.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use std::path::Path;
use std::time::Instant;
use switchyard::config::Config;
use switchyard::control::Controller;
use switchyard::upstream::endpoint::pick_endpoint;

const CONFIG: &str = r#"
[proxy]
listen = "127.0.0.1:0"

[services.shop]
hosts = ["shop.example.com"]
stable = "blue"
weights = { blue = 95, canary = 5 }

[services.shop.versions.blue]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9011"]

[services.shop.versions.canary]
endpoints = ["127.0.0.1:9003"]

[services.sticky]
hosts = ["sticky.example.com"]
stable = "blue"
weights = { blue = 95, canary = 5 }
sticky = { cookie = "sy_user" }

[services.sticky.versions.blue]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9011"]

[services.sticky.versions.canary]
endpoints = ["127.0.0.1:9003"]
"#;

fn routing_decision(c: &mut Criterion) {
    let config = Config::parse(Path::new("bench.toml"), CONFIG).expect("bench config is valid");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let state = tempfile::tempdir().expect("temp dir");
    let mut config = config;
    config.state_dir = state.path().to_path_buf();
    let controller = runtime
        .block_on(Controller::open(config, "bench.toml".into(), 1, false))
        .expect("controller");
    let plane = controller.plane.clone();
    let uri = http::Uri::from_static("/cart?item=7");
    let mut weighted = HeaderMap::new();
    weighted.insert("host", HeaderValue::from_static("shop.example.com"));
    let mut sticky = HeaderMap::new();
    sticky.insert("host", HeaderValue::from_static("sticky.example.com"));
    sticky.insert(
        "cookie",
        HeaderValue::from_static("session=abc; sy_user=0123456789abcdef"),
    );

    for (name, headers, host) in [
        ("route/weighted", &weighted, "shop.example.com"),
        ("route/sticky_cookie", &sticky, "sticky.example.com"),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let table = plane.table.load_full();
                let service = table
                    .service_for(Some(black_box(host)), &http::Method::GET, &uri, headers)
                    .expect("service");
                let version = &service.versions[service.pick(black_box(headers), &uri).version()];
                black_box(pick_endpoint(&version.endpoints, Instant::now(), None))
            })
        });
    }
}

criterion_group!(benches, routing_decision);
criterion_main!(benches);
