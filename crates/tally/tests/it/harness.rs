//! Starting, stopping and talking to `tally` processes in tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn tally_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tally")
}

/// Runs a `tally` CLI command against `data_dir` and returns its stdout; panics with
/// stderr if it fails.
pub fn tally(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tally_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("TALLY_LOG", "warn")
        .output()
        .expect("running tally");
    assert!(
        out.status.success(),
        "tally {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Creates a tenant and returns `(id, write_key, secret_key)`.
pub fn create_tenant(data_dir: &Path, name: &str) -> (u64, String, String) {
    let v: Value = serde_json::from_str(&tally(data_dir, &["tenant", "create", name, "--json"]))
        .expect("json");
    (
        v["id"].as_u64().expect("id"),
        v["write_key"].as_str().expect("write_key").to_string(),
        v["secret_key"].as_str().expect("secret_key").to_string(),
    )
}

/// Exports a tenant's events as JSON values (the server must not be running).
pub fn export_events(data_dir: &Path, tenant: &str) -> Vec<Value> {
    tally(data_dir, &["export", "events", "--tenant", tenant])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `tally serve`.
// Killing and restarting are for crash tests; the SIGKILL test reads the server's log
// and so runs its own process (`crash::LoggedServer`), leaving them unused for now.
#[allow(dead_code)]
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    extra: Vec<String>,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_serve(data_dir, port, &extra);
        let mut server = Server {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            extra,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tally serve exited during start-up: {status}");
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!(
                    "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                if stream.write_all(req.as_bytes()).is_ok() {
                    let mut buf = String::new();
                    let _ = stream.read_to_string(&mut buf);
                    if buf.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "tally serve did not become ready within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "tally serve exited with {status} on SIGTERM"
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => panic!("tally serve did not stop within 60s of SIGTERM"),
            }
        }
    }

    /// Starts the server again on the same port and data directory.
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.data_dir, self.port, &self.extra);
        self.wait_ready(Duration::from_secs(120));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(data_dir: &Path, port: u16, extra: &[String]) -> Child {
    Command::new(tally_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env(
            "TALLY_LOG",
            std::env::var("TALLY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning tally serve")
}
