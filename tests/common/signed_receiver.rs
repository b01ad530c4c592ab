//! `tests/tools/signed_hook_receiver.py`, a webhook receiver that checks switchyard's
//! HMAC signatures with Python's own `hmac`, run as a child process.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// `tests/tools/signed_hook_receiver.py` on `port`; its lines arrive on the channel.
pub struct PythonReceiver {
    child: Child,
    pub lines: mpsc::UnboundedReceiver<serde_json::Value>,
    /// Every line received so far.
    pub seen: Vec<serde_json::Value>,
}

impl PythonReceiver {
    pub fn start(port: u16, secret: &Path, tls: Option<(&Path, &Path)>) -> PythonReceiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/signed_hook_receiver.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(secret)
            .args(tls.iter().flat_map(|(cert, key)| [cert, key]))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed (the ./test script installs it)");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = send.send(serde_json::from_str(&line).unwrap());
            }
        });
        PythonReceiver {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Until the script accepts connections (bounded: python3 may start slowly when busy).
    pub async fn listening(self, addr: std::net::SocketAddr) -> PythonReceiver {
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return self;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the python receiver never listened on {addr}");
    }

    /// The first line, seen before or arriving (bounded), that satisfies `wanted`.
    pub async fn until(
        &mut self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match waited {
            Ok(Some(line)) => line,
            _ => panic!("the wanted event never came; got {:#?}", self.seen),
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
