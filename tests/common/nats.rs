//! Real `nats-server -js` processes for fleet tests: on loopback, OS-free ports, storage in
//! temp dirs, stopped by PID. A single node, or a three-node JetStream cluster.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `nats-server` process (which may be stopped and started again on the same port and
/// storage, as an operator restarting it would).
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    cluster_port: Option<u16>,
    routes: Vec<u16>,
    store: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
    /// A `nats-server` config file (auth, TLS), when the node has one.
    config: Option<PathBuf>,
}

/// `nats://127.0.0.1:PORT` of each node, as a TOML array.
pub fn servers_toml(nodes: &[&NatsNode]) -> String {
    let urls: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    format!("[{}]", urls.join(", "))
}

/// The `[cluster]` section joining fleet `name` through `nodes`.
pub fn cluster_toml(nodes: &[&NatsNode], name: &str, instance: &str) -> String {
    format!(
        "\n[cluster]\nnats = {}\nname = \"{name}\"\ninstance = \"{instance}\"\n",
        servers_toml(nodes)
    )
}

fn free_port() -> u16 {
    super::free_addr().port()
}

impl NatsNode {
    fn new(name: &str, cluster_port: Option<u16>, routes: Vec<u16>) -> NatsNode {
        let store = tempfile::tempdir().unwrap();
        let log = store.path().join("nats.log");
        NatsNode {
            name: name.to_string(),
            port: free_port(),
            cluster_port,
            routes,
            store,
            log,
            child: None,
            config: None,
        }
    }

    /// A single JetStream node with `config` (nats-server config text: authorization, TLS)
    /// in its config file, started and listening.
    pub fn single_with(config: &str) -> NatsNode {
        let mut node = NatsNode::new("n1", None, Vec::new());
        let path = node.store.path().join("nats.conf");
        std::fs::write(&path, config).unwrap();
        node.config = Some(path);
        node.start();
        node.wait_listening();
        node
    }

    /// The node's storage dir (for files its config names).
    pub fn dir(&self) -> &std::path::Path {
        self.store.path()
    }

    /// Deletes the JetStream storage (the node must be stopped): a lost store.
    pub fn wipe_store(&self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let _ = std::fs::remove_dir_all(self.store.path().join("js"));
    }

    /// The server's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A single JetStream node, started and answering.
    pub fn single() -> NatsNode {
        let mut node = NatsNode::new("n1", None, Vec::new());
        node.start();
        node.wait_listening();
        node
    }

    /// Three JetStream nodes routed to each other, started and answering (JetStream may
    /// still be electing its leader; fleet code waits for that like any client would).
    pub fn cluster() -> Vec<NatsNode> {
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsNode> = (0..3)
            .map(|i| {
                NatsNode::new(
                    &format!("n{}", i + 1),
                    Some(cluster_ports[i]),
                    cluster_ports.clone(),
                )
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        for node in &nodes {
            node.wait_listening();
        }
        nodes
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again, on the same port and storage).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-sd"])
            .arg(self.store.path().join("js"));
        if let Some(cluster_port) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", "sy-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start nats-server ({err}): install it with `apt-get install nats-server`")
            });
        self.child = Some(child);
    }

    /// Waits (bounded) until the client port accepts connections.
    pub fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen within 10s:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL by PID and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}
