//! Turns the raw file into a `Config`, collecting every problem with its line.

use super::*;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// One thing wrong with a config, at a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// Endpoint names that gave no address when the config was applied.
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))]
    Unresolved {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Unreadable { .. } | ConfigError::Unresolved { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}: {}", path.display(), p.line, p.message))
        .collect();
    lines.join("\n")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    /// Reads versions' TLS files (for `check`); plain loading leaves them to the apply.
    tls_files: Option<upstream_tls::TlsFileCheck>,
}

impl Checker<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    fn report_all(&mut self, problems: Vec<(Range<usize>, String)>) {
        for (span, message) in problems {
            self.report(span, message);
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    value.span(),
                    format!(
                        "{what} {:?} is not an IP:port address (e.g. \"127.0.0.1:8080\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn header_name(
        &mut self,
        span: Range<usize>,
        name: &str,
        what: &str,
    ) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => Some(header),
            Err(_) => {
                self.report(
                    span,
                    format!("{what} {name:?} is not a valid HTTP header name"),
                );
                None
            }
        }
    }
}

pub(super) fn parse_and_validate(
    path: &Path,
    text: &str,
    tls_files: Option<upstream_tls::TlsFileCheck>,
) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        tls_files,
    };
    let file: Option<FileConfig> =
        salvage::deserialize_all(text, |span, message| checker.report(span, message));
    // The rest is checked even after problems were cut out, so every one is listed.
    let config = file.and_then(|file| check(&mut checker, file));
    match config {
        Some(config) if checker.problems.is_empty() => Ok(config),
        _ => {
            checker.problems.sort_by_key(|p| p.line);
            Err(invalid(checker.problems))
        }
    }
}

fn check(checker: &mut Checker, file: FileConfig) -> Option<Config> {
    let listen = checker.socket_addr(&file.proxy.listen, "proxy.listen");
    let version_header = match file.proxy.version_header.get_ref().as_str() {
        "" => Some(None),
        name => checker
            .header_name(
                file.proxy.version_header.span(),
                name,
                "proxy.version_header",
            )
            .map(Some),
    };
    let max_header_bytes = *file.proxy.max_header_bytes.get_ref();
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        checker.report(
            file.proxy.max_header_bytes.span(),
            format!(
                "proxy.max_header_bytes must be between 1024 and 1048576, not {max_header_bytes}"
            ),
        );
    }
    let max_connections = *file.proxy.max_connections.get_ref();
    if !(1..=10_000_000).contains(&max_connections) {
        checker.report(
            file.proxy.max_connections.span(),
            format!("proxy.max_connections must be between 1 and 10000000, not {max_connections}"),
        );
    }
    check_timeouts(checker, &file.proxy.timeouts);
    let resolve_every = file.proxy.resolve_every.get_ref().0;
    if !resolve_every.is_zero() && resolve_every < Duration::from_secs(1) {
        checker.report(
            file.proxy.resolve_every.span(),
            "proxy.resolve_every must be \"0s\" (off) or at least 1s",
        );
    }
    let admin_listen = file
        .admin
        .listen
        .as_ref()
        .map(|addr| checker.socket_addr(addr, "admin.listen"));
    if let (Some(listen), None) = (&file.admin.listen, &file.admin.token_file) {
        checker.report(
            listen.span(),
            "admin.listen needs admin.token_file: mutations over TCP require a bearer token",
        );
    }
    if let Some(token_file) = &file.admin.token_file {
        if let Err(why) = secret::read_secret(token_file.get_ref(), secret::MIN_SHARED_SECRET) {
            checker.report(token_file.span(), format!("admin.token_file: {why}"));
        }
    }
    let hooks = check_hooks(checker, &file.hooks);
    let cluster = file.cluster.as_ref().and_then(|section| {
        section
            .settings()
            .map_err(|problems| checker.report_all(problems))
            .ok()
    });
    if file.services.is_empty() {
        checker.report(
            0..0,
            "no [services.NAME] section: there is nothing to route to",
        );
    }

    let mut services = Vec::new();
    let mut host_owner: HashMap<String, String> = HashMap::new();
    let mut catch_all: Option<String> = None;
    for (name, section) in &file.services {
        let span = section.span();
        let section = section.get_ref();
        if section.hosts.is_empty() {
            if let Some(other) = &catch_all {
                checker.report(
                    span.clone(),
                    format!("services.{name} and services.{other} both have no hosts: only one service may take every host"),
                );
            }
            catch_all = Some(name.clone());
        }
        let mut hosts = Vec::new();
        for host in &section.hosts {
            let lower = host.get_ref().trim().to_ascii_lowercase();
            if lower.is_empty() || lower.contains(|c: char| c.is_whitespace() || c == '/') {
                checker.report(
                    host.span(),
                    format!(
                        "services.{name}.hosts: {:?} is not a host name",
                        host.get_ref()
                    ),
                );
                continue;
            }
            if let Some(other) = host_owner.insert(lower.clone(), name.clone()) {
                checker.report(
                    host.span(),
                    format!(
                        "host {lower:?} is claimed by both services.{other} and services.{name}"
                    ),
                );
            }
            hosts.push(lower);
        }
        if let Some(service) = check_service(checker, name, section, span, hosts) {
            services.push(service);
        }
    }
    let routes = check_routes(checker, &file.routes, &file.services);
    let access_log = file.proxy.access_log.as_ref().and_then(|section| {
        section
            .get_ref()
            .settings()
            .map_err(|problem| checker.report(section.span(), problem))
            .ok()
            .flatten()
    });
    let otlp = file.telemetry.otlp.as_ref().and_then(|section| {
        section
            .get_ref()
            .settings()
            .map_err(|problem| checker.report(section.span(), problem))
            .ok()
    });

    Some(Config {
        listen: listen?,
        tls: file.proxy.tls.map(|tls| TlsPaths {
            cert: tls.cert.into_inner(),
            key: tls.key.into_inner(),
        }),
        version_header: version_header?,
        timeouts: file.proxy.timeouts.into_inner(),
        max_header_bytes,
        max_connections,
        access_log,
        otlp,
        workers: file.proxy.workers,
        resolve_every,
        admin_socket: file.admin.socket,
        admin_listen: admin_listen.flatten(),
        admin_token_file: file.admin.token_file.map(Spanned::into_inner),
        state_dir: file.state.dir,
        hooks,
        cluster,
        services,
        routes,
    })
}

/// A version match: one source (header, cookie or query parameter) and one test.
fn check_match(
    checker: &mut Checker,
    service: &str,
    span: Range<usize>,
    rule: &MatchSection,
) -> Option<MatchRule> {
    let key = format!("services.{service}.match");
    let source = match (&rule.header, &rule.cookie, &rule.query) {
        (Some(header), None, None) => MatchSource::Header(checker.header_name(
            span.clone(),
            header,
            &format!("{key} header"),
        )?),
        (None, Some(cookie), None) => MatchSource::Cookie(cookie.clone()),
        (None, None, Some(query)) => MatchSource::Query(query.clone()),
        _ => {
            checker.report(span, format!("{key}: give one of header, cookie or query"));
            return None;
        }
    };
    if rule.value.is_some() == rule.regex.is_some() {
        checker.report(
            span,
            format!("{key}: give one of value = \"...\" or regex = \"...\""),
        );
        return None;
    }
    let test = routes::ValueSection {
        exact: rule.value.clone(),
        regex: rule.regex.clone(),
        present: None,
    };
    match routes::ValueMatch::parse(&test, &key) {
        Ok(test) => Some(MatchRule {
            source,
            test,
            version: rule.version.clone(),
        }),
        Err(problem) => {
            checker.report(span, problem);
            None
        }
    }
}

/// Each route, and any that an earlier one leaves nothing to (it can never match).
fn check_routes(
    checker: &mut Checker,
    sections: &[Spanned<routes::RouteSection>],
    services: &BTreeMap<String, Spanned<ServiceSection>>,
) -> Vec<routes::RouteRule> {
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    let mut rules: Vec<(usize, routes::RouteRule)> = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let (n, span) = (index + 1, section.span());
        let line = checker.line_of(span.clone());
        let mut problems = Vec::new();
        let rule = section
            .get_ref()
            .rule(n, span.clone(), line, &names, &mut problems);
        checker.report_all(problems);
        let Some(rule) = rule else { continue };
        if let Some((earlier, by)) = rules.iter().find(|(_, earlier)| earlier.covers(&rule)) {
            checker.report(
                span,
                format!(
                    "routes[{n}] can never match: routes[{earlier}] (line {}) takes every request it would",
                    by.line
                ),
            );
        }
        rules.push((n, rule));
    }
    rules.into_iter().map(|(_, rule)| rule).collect()
}

fn check_timeouts(checker: &mut Checker, timeouts: &Spanned<TimeoutSection>) {
    let section = timeouts.get_ref();
    for (name, value) in [
        ("upstream_body_idle", section.upstream_body_idle),
        ("client_idle", section.client_idle),
    ] {
        if value.0.is_zero() {
            checker.report(
                timeouts.span(),
                format!("proxy.timeouts.{name} must be more than 0"),
            );
        }
    }
}

fn check_hooks(checker: &mut Checker, hooks: &HooksSection) -> HooksConfig {
    let mut webhooks: Vec<Webhook> = Vec::new();
    let lists = [
        ("webhooks", &hooks.webhooks, HookFormat::Json),
        ("slack", &hooks.slack, HookFormat::Slack),
    ];
    for (key, urls, format) in lists {
        for url in urls {
            match url.get_ref().parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    if webhooks.iter().any(|hook| hook.url == uri) {
                        checker.report(url.span(), format!("hooks.{key}: {uri} is listed twice"));
                    }
                    webhooks.push(Webhook { url: uri, format });
                }
                _ => checker.report(
                    url.span(),
                    format!(
                        "hooks.{key}: {:?} is not an http[s]://HOST[:PORT]/PATH URL",
                        url.get_ref()
                    ),
                ),
            }
        }
    }
    if let Some(file) = &hooks.secret_file {
        if let Err(why) = secret::read_secret(file.get_ref(), secret::MIN_SHARED_SECRET) {
            checker.report(file.span(), format!("hooks.secret_file: {why}"));
        }
    }
    if let Some(ca) = &hooks.ca {
        if let Err(why) = cluster_files::certificates(ca.get_ref()) {
            checker.report(ca.span(), format!("hooks.ca: {why}"));
        }
    }
    let timeout = hooks.timeout.get_ref().0;
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        checker.report(
            hooks.timeout.span(),
            "hooks.timeout must be more than 0 and at most 60s",
        );
    }
    let attempts = *hooks.attempts.get_ref();
    if !(1..=10).contains(&attempts) {
        checker.report(
            hooks.attempts.span(),
            format!("hooks.attempts must be between 1 and 10, not {attempts}"),
        );
    }
    HooksConfig {
        webhooks,
        timeout,
        attempts,
        secret_file: hooks.secret_file.as_ref().map(|f| f.get_ref().clone()),
        ca: hooks.ca.as_ref().map(|f| f.get_ref().clone()),
    }
}

fn check_service(
    checker: &mut Checker,
    name: &str,
    section: &ServiceSection,
    span: Range<usize>,
    hosts: Vec<String>,
) -> Option<ServiceConfig> {
    let before = checker.problems.len();
    if section.versions.is_empty() {
        checker.report(span.clone(), format!("services.{name} has no versions"));
    }
    let mut versions = Vec::new();
    for (version_name, version) in &section.versions {
        let version_span = version.span();
        let version = version.get_ref();
        if version.endpoints.is_empty() {
            checker.report(
                version_span.clone(),
                format!("services.{name}.versions.{version_name} has no endpoints"),
            );
        }
        let sources: Vec<String> = version
            .endpoints
            .iter()
            .map(|e| e.get_ref().clone())
            .collect();
        let endpoints = endpoint::resolve_all(&sources, endpoint::written, |index, problem| {
            checker.report(
                version.endpoints[index].span(),
                format!(
                    "services.{name}.versions.{version_name} endpoint {:?} {problem}",
                    sources[index]
                ),
            )
        });
        let tls = version.tls.as_ref().and_then(|tls| {
            let label = format!("services.{name}.versions.{version_name}");
            let settings = upstream_tls::check(&label, tls, &sources, checker.tls_files)
                .map_err(|problems| checker.report_all(problems))
                .ok()?;
            Some(VersionTls {
                settings,
                lines: tls_lines(checker, tls),
            })
        });
        let protocol = version
            .protocol
            .as_ref()
            .map_or_else(Default::default, |protocol| {
                check_protocol(checker, name, version_name, protocol, version.tls.is_some())
            });
        versions.push(VersionConfig {
            name: version_name.clone(),
            endpoints,
            sources,
            release: version.release.clone(),
            tls,
            protocol,
        });
    }

    let known = |v: &str| section.versions.contains_key(v);
    let stable = section.stable.get_ref();
    if !known(stable) {
        checker.report(
            section.stable.span(),
            format!("services.{name}.stable names version {stable:?}, which is not defined"),
        );
    }
    let mut weights = BTreeMap::new();
    for (version, weight) in section.weights.get_ref() {
        if !known(version) {
            checker.report(
                weight.span(),
                format!("services.{name}.weights names version {version:?}, which is not defined"),
            );
        }
        match u64::try_from(*weight.get_ref()) {
            Ok(w) => {
                weights.insert(version.clone(), w);
            }
            Err(_) => checker.report(
                weight.span(),
                format!(
                    "services.{name}.weights.{version} is negative ({})",
                    weight.get_ref()
                ),
            ),
        }
    }
    if weights.values().all(|&w| w == 0) {
        checker.report(
            section.weights.span(),
            format!("services.{name}.weights are all zero: no version would get traffic"),
        );
    }
    if weights
        .values()
        .try_fold(0u64, |sum, &w| sum.checked_add(w))
        .is_none()
    {
        checker.report(
            section.weights.span(),
            format!("services.{name}.weights add up past 2^64"),
        );
    }

    let sticky = section.sticky.as_ref().and_then(|sticky| {
        match (&sticky.get_ref().cookie, &sticky.get_ref().header) {
            (Some(cookie), None) if is_cookie_name(cookie) => Some(Sticky::Cookie(cookie.clone())),
            (Some(cookie), None) => {
                checker.report(
                    sticky.span(),
                    format!("services.{name}.sticky cookie {cookie:?} is not a valid cookie name"),
                );
                None
            }
            (None, Some(header)) => checker
                .header_name(
                    sticky.span(),
                    header,
                    &format!("services.{name}.sticky header"),
                )
                .map(Sticky::Header),
            _ => {
                checker.report(
                    sticky.span(),
                    format!("services.{name}.sticky needs exactly one of cookie or header"),
                );
                None
            }
        }
    });

    let mut matches = Vec::new();
    for rule in &section.matches {
        let span = rule.span();
        let rule = rule.get_ref();
        if !known(&rule.version) {
            checker.report(
                span.clone(),
                format!(
                    "services.{name}.match names version {:?}, which is not defined",
                    rule.version
                ),
            );
        }
        if let Some(rule) = check_match(checker, name, span, rule) {
            matches.push(rule);
        }
    }

    let guard = match &section.guard {
        Some(guard) => {
            for problem in guard.get_ref().problems(name) {
                checker.report(guard.span(), problem);
            }
            guard.get_ref().settings()
        }
        None => GuardSettings::default(),
    };
    let facts = rollout::ServiceFacts {
        name,
        stable,
        weights: &weights,
        versions: &versions,
        guard: &guard,
    };
    let rollout = section.rollout.as_ref().and_then(|rollout| {
        rollout
            .get_ref()
            .settings(rollout.span(), &facts)
            .map_err(|problems| checker.report_all(problems))
            .ok()
    });

    let (verify, problems) = checks::verify_settings(
        name,
        section.health.as_ref(),
        &section.checks,
        section.checks_every.as_ref(),
    );
    for (span, problem) in problems {
        checker.report(span, problem);
    }

    let grpc_error_codes =
        section
            .grpc_error_codes
            .as_ref()
            .map_or_else(grpc::GrpcCodes::default, |entries| {
                let mut codes = Vec::new();
                for entry in entries.get_ref() {
                    match entry.code() {
                        Ok(code) => codes.push(code),
                        Err(problem) => checker.report(
                            entries.span(),
                            format!("services.{name}.grpc_error_codes: {problem}"),
                        ),
                    }
                }
                grpc::GrpcCodes::of(&codes)
            });

    let shadow = section.shadow.as_ref().and_then(|shadow| {
        let names: Vec<&str> = section.versions.keys().map(String::as_str).collect();
        let mut problems = Vec::new();
        let settings =
            shadow
                .get_ref()
                .settings(name, stable, &names, shadow.span(), &mut problems);
        checker.report_all(problems);
        settings
    });

    if let (Some(plan), Some(written)) = (&rollout, &section.rollout) {
        if let Some(problem) = shadow_step_problem(name, plan, shadow.as_ref()) {
            checker.report(written.span(), problem);
        }
    }

    let mut analyses: Vec<AnalysisSettings> = Vec::new();
    for entry in &section.analysis {
        let mut problems = Vec::new();
        let settings = entry.get_ref().settings(name, entry.span(), &mut problems);
        checker.report_all(problems);
        let Some(settings) = settings else { continue };
        if analyses.iter().any(|a| a.name == settings.name) {
            checker.report(
                entry.get_ref().name.span(),
                format!(
                    "services.{name}.analysis {:?} is defined twice: each analysis needs its own name",
                    settings.name
                ),
            );
        }
        analyses.push(settings);
    }

    (checker.problems.len() == before).then(|| ServiceConfig {
        name: name.to_string(),
        hosts,
        stable: stable.clone(),
        weights,
        sticky,
        versions,
        matches,
        guard,
        rollout,
        verify,
        grpc_error_codes,
        shadow,
        analyses,
    })
}

/// A rollout that begins with a shadow step needs the service's shadow to be its canary.
fn shadow_step_problem(
    service: &str,
    plan: &RolloutSettings,
    shadow: Option<&shadow::ShadowSettings>,
) -> Option<String> {
    if !plan.shadow_first {
        return None;
    }
    let canary = &plan.canary;
    let key = format!("services.{service}.rollout.shadow_first");
    match shadow {
        None => Some(format!(
            "{key} needs [services.{service}.shadow] with version = {canary:?}"
        )),
        Some(shadow) if shadow.version != *canary => Some(format!(
            "{key}: the rollout's canary is {canary:?} but services.{service}.shadow.version is {:?}; the shadow step judges the canary's shadow",
            shadow.version
        )),
        Some(_) => None,
    }
}

/// The line of each key of a version's `tls`, for problems its files give at apply.
fn tls_lines(checker: &Checker, tls: &Spanned<upstream_tls::VersionTlsSection>) -> TlsLines {
    let line = |key| checker.line_of(upstream_tls::span_of(tls, key));
    TlsLines {
        table: line(TlsKey::Table),
        ca: line(TlsKey::Ca),
        server_name: line(TlsKey::ServerName),
        cert: line(TlsKey::Cert),
        key: line(TlsKey::Key),
    }
}

/// The version's protocol, which must agree with its TLS: `"h2"` is HTTP/2 over TLS,
/// `"h2c"` HTTP/2 in clear.
fn check_protocol(
    checker: &mut Checker,
    service: &str,
    version: &str,
    protocol: &Spanned<String>,
    has_tls: bool,
) -> UpstreamProtocol {
    let key = format!("services.{service}.versions.{version}.protocol");
    let Some(parsed) = UpstreamProtocol::parse(protocol.get_ref()) else {
        checker.report(
            protocol.span(),
            format!(
                "{key} must be \"http1\", \"h2c\" or \"h2\", not {:?}",
                protocol.get_ref()
            ),
        );
        return UpstreamProtocol::default();
    };
    match (parsed, has_tls) {
        (UpstreamProtocol::H2, false) => checker.report(
            protocol.span(),
            format!("{key} \"h2\" is HTTP/2 over TLS and needs a tls table (tls = {{}} verifies against the system's CAs); \"h2c\" is HTTP/2 in clear"),
        ),
        (UpstreamProtocol::H2c, true) => checker.report(
            protocol.span(),
            format!("{key} \"h2c\" is HTTP/2 in clear, but the version has tls: use \"h2\" for HTTP/2 over TLS"),
        ),
        _ => {}
    }
    parsed
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
