//! The data plane as a real child process (the binary cargo built), for what only a process shows:
//! several nodes sharing Redis, SIGTERM, memory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub address: String,
}

impl Proc {
    /// Starts `data-plane` on 127.0.0.1:0 and waits for the line that says where it listens.
    pub fn spawn(db_url: &str, redis: Option<&(String, String)>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_data-plane"));
        cmd.env("GATEWAY_DATABASE_URL", db_url)
            .env("GATEWAY_DATA_PLANE_ADDR", "127.0.0.1:0")
            .env("GATEWAY_REDIS_TIMEOUT_MS", "2000")
            .env("GATEWAY_UPSTREAM_ALLOW", "127.0.0.0/8")
            .env("RUST_LOG", "info")
            .env_remove("GATEWAY_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((url, prefix)) = redis {
            cmd.env("GATEWAY_REDIS_URL", url)
                .env("GATEWAY_REDIS_PREFIX", prefix);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start data-plane");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .filter(|_| line.contains("listening"))
                {
                    let _ = tx.send(
                        addr.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_mins(1))
            .expect("data-plane did not start listening");
        Self {
            child,
            address: format!("http://{addr}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "data-plane exited with {status}");
    }

    /// Peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
