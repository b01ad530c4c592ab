//! `[[routes]]` and version matches over real sockets: every kind of match, order, the
//! fallback to `hosts`, routes that can never match, and bad routes.

mod common;

use common::{client, get, upstream, TestProxy};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use switchyard_testkit::SampleUpstream;

type Headers = &'static [(&'static str, &'static str)];

/// Three services, each with one version named after it, and `routes` in front.
async fn proxy(routes: &str) -> (TestProxy, Vec<SampleUpstream>) {
    let names = ["api", "web", "admin"];
    let mut upstreams = Vec::new();
    let mut text = String::from(routes);
    for name in names {
        let up = upstream(name).await;
        let hosts = match name {
            "web" => "hosts = [\"www.example.com\"]".to_string(),
            "admin" => String::new(),
            _ => "hosts = [\"api.internal\"]".to_string(),
        };
        text.push_str(&format!(
            "\n[services.{name}]\n{hosts}\nstable = \"{name}\"\nweights = {{ {name} = 100 }}\n\n[services.{name}.versions.{name}]\nendpoints = [\"{}\"]\n",
            up.addr
        ));
        upstreams.push(up);
    }
    (TestProxy::start(&text).await, upstreams)
}

const ROUTES: &str = r#"
[[routes]]
host = "*.example.com"
path = { prefix = "/api/" }
methods = ["GET", "POST"]
service = "api"

[[routes]]
path = { regex = "^/v[0-9]+/admin" }
service = "admin"

[[routes]]
path = { exact = "/login" }
headers = { "x-tenant" = { regex = "^a" } }
service = "admin"

[[routes]]
query = { "beta" = { exact = "1" } }
headers = { "x-debug" = { present = true } }
service = "api"
"#;

/// Which service answered (each has one version, named after it).
async fn who(
    proxy: &TestProxy,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let http = client();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.addr()))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = http
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let reply = common::Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    reply.version.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_route_takes_its_requests_first_match_wins_else_hosts() {
    let (proxy, _up) = proxy(ROUTES).await;
    let cases: [(Method, &str, &str, Headers, &str); 15] = [
        // Wildcard host and prefix: any name under example.com, GET or POST.
        (Method::GET, "www.example.com", "/api/cart", &[], "api"),
        (
            Method::POST,
            "shop.example.com:8080",
            "/api/cart",
            &[],
            "api",
        ),
        // The wildcard does not take the bare domain, nor DELETE: hosts decide.
        (Method::DELETE, "www.example.com", "/api/cart", &[], "web"),
        (Method::GET, "example.com", "/api/cart", &[], "admin"),
        // Regex path, any host.
        (Method::GET, "api.internal", "/v2/admin/users", &[], "admin"),
        (
            Method::GET,
            "api.internal",
            "/v2/administrator",
            &[],
            "admin",
        ),
        (Method::GET, "api.internal", "/vx/admin", &[], "api"),
        // Matched as the upstream reads the path: dot segments, doubled slashes and
        // escaped letters do not slip past a route.
        (
            Method::GET,
            "api.internal",
            "/x/../v2/admin/users",
            &[],
            "admin",
        ),
        (Method::GET, "api.internal", "//v2//admin", &[], "admin"),
        (Method::GET, "api.internal", "/%76%32/admin", &[], "admin"),
        // Exact path and a header regex.
        (
            Method::GET,
            "www.example.com",
            "/login",
            &[("x-tenant", "acme")],
            "admin",
        ),
        (
            Method::GET,
            "www.example.com",
            "/login",
            &[("x-tenant", "zeta")],
            "web",
        ),
        (
            Method::GET,
            "www.example.com",
            "/login/",
            &[("x-tenant", "acme")],
            "web",
        ),
        // Query parameter and a header that only has to be present.
        (
            Method::GET,
            "www.example.com",
            "/?a=2&beta=1",
            &[("x-debug", "")],
            "api",
        ),
        (
            Method::GET,
            "www.example.com",
            "/?beta=10",
            &[("x-debug", "1")],
            "web",
        ),
    ];
    for (method, host, path, headers, expected) in cases {
        let got = who(&proxy, method.clone(), host, path, headers).await;
        assert_eq!(got, expected, "{method} {host}{path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_matches_by_cookie_query_and_header_pattern() {
    let stable = upstream("blue").await;
    let beta = upstream("beta").await;
    let text = format!(
        r#"
[services.shop]
stable = "blue"
weights = {{ blue = 100, beta = 0 }}

[[services.shop.match]]
cookie = "beta"
value = "1"
version = "beta"

[[services.shop.match]]
query = "preview"
value = "yes"
version = "beta"

[[services.shop.match]]
header = "x-employee"
regex = "^[a-z]+@example\\.com$"
version = "beta"

[services.shop.versions.blue]
endpoints = ["{}"]

[services.shop.versions.beta]
endpoints = ["{}"]
"#,
        stable.addr, beta.addr
    );
    let proxy = TestProxy::start(&text).await;
    let http = client();
    let cases: [(&str, Headers, &str); 7] = [
        ("/", &[("cookie", "a=b; beta=1")], "beta"),
        ("/", &[("cookie", "beta=10")], "blue"),
        ("/cart?preview=yes", &[], "beta"),
        ("/cart?preview=no&x=yes", &[], "blue"),
        ("/", &[("x-employee", "ann@example.com")], "beta"),
        ("/", &[("x-employee", "ann@example.com.evil")], "blue"),
        ("/", &[], "blue"),
    ];
    for (path, headers, expected) in cases {
        let reply = get(&http, proxy.addr(), path, headers).await;
        assert_eq!(
            reply.version.as_deref(),
            Some(expected),
            "{path} {headers:?}"
        );
    }
}

fn problems_of(routes: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = common::full_config(
        "127.0.0.1:0",
        dir.path(),
        &format!(
            "{routes}\n[services.api]\nstable = \"v1\"\nweights = {{ v1 = 1 }}\n[services.api.versions.v1]\nendpoints = [\"127.0.0.1:9\"]\n"
        ),
    );
    match switchyard::config::Config::parse(std::path::Path::new("routes.toml"), &text) {
        Ok(_) => String::new(),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_route_an_earlier_one_covers_is_named_as_never_matching() {
    let shadowed = [
        (
            "path = { prefix = \"/api/\" }",
            "path = { exact = \"/api/users\" }",
        ),
        (
            "host = \"*.example.com\"",
            "host = \"www.example.com\"\npath = { regex = \"x\" }",
        ),
        ("methods = [\"GET\", \"POST\"]", "methods = [\"GET\"]"),
        (
            "headers = { \"x-a\" = { present = true } }",
            "headers = { \"x-a\" = { exact = \"1\" }, \"x-b\" = { exact = \"2\" } }",
        ),
        ("", "query = { \"q\" = { exact = \"1\" } }"),
    ];
    for (first, second) in shadowed {
        let routes = format!(
            "[[routes]]\n{first}\nservice = \"api\"\n\n[[routes]]\n{second}\nservice = \"api\"\n"
        );
        let problems = problems_of(&routes);
        assert!(
            problems.contains("routes[2] can never match: routes[1] (line"),
            "{first} / {second}: {problems}"
        );
    }
    let reachable = [
        (
            "path = { exact = \"/api/users\" }",
            "path = { prefix = \"/api/\" }",
        ),
        ("methods = [\"GET\"]", ""),
        ("host = \"www.example.com\"", "host = \"*.example.com\""),
        ("path = { regex = \"^/a\" }", "path = { prefix = \"/a\" }"),
    ];
    for (first, second) in reachable {
        let routes = format!(
            "[[routes]]\n{first}\nservice = \"api\"\n\n[[routes]]\n{second}\nservice = \"api\"\n"
        );
        assert_eq!(problems_of(&routes), "", "{first} / {second}");
    }
}

#[test]
fn bad_routes_are_each_named_with_their_line() {
    let cases = [
        ("service = \"nope\"", "no service \"nope\""),
        (
            "path = { regex = \"(\" }\nservice = \"api\"",
            "does not compile",
        ),
        (
            "path = { exact = \"/a\", prefix = \"/b\" }\nservice = \"api\"",
            "one of exact, prefix or regex",
        ),
        (
            "host = \"a*.example.com\"\nservice = \"api\"",
            "neither a name nor",
        ),
        (
            "methods = [\"G T\"]\nservice = \"api\"",
            "not an HTTP method",
        ),
        (
            "headers = { \"x-a\" = { exact = \"1\", regex = \"2\" } }\nservice = \"api\"",
            "give one of",
        ),
        (
            "headers = { \"bad header\" = { present = true } }\nservice = \"api\"",
            "not a header name",
        ),
        ("colour = \"red\"\nservice = \"api\"", "unknown field"),
        (
            "host = \"example.com:8080\"\nservice = \"api\"",
            "without its port",
        ),
        (
            "path = { prefix = \"api/\" }\nservice = \"api\"",
            "must start with /",
        ),
        (
            "path = { exact = \"/a?b=1\" }\nservice = \"api\"",
            "no query",
        ),
        ("methods = []\nservice = \"api\"", "methods is empty"),
    ];
    for (route, expected) in cases {
        let problems = problems_of(&format!("[[routes]]\n{route}\n"));
        assert!(
            problems.contains(expected) && problems.contains("routes.toml:"),
            "{route}: {problems}"
        );
    }
}
