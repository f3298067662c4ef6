//! Control sockets of the host and guest processes: one JSON request per line, one JSON
//! reply per line, over a Unix stream socket under the run directory.
//!
//! `hvnet ethtool`, `hvnet stats` and the lab speak to running processes through them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Default run directory for sockets.
pub const RUN_DIR: &str = "/run/hvnet";

/// The directory of one lab's sockets.
pub fn lab_dir(run_dir: &Path, lab: &str) -> PathBuf {
    run_dir.join(lab)
}

/// Path of a VM's VMBus socket (served by the host).
pub fn vmbus_socket(run_dir: &Path, lab: &str, vm: &str) -> PathBuf {
    lab_dir(run_dir, lab).join(format!("{vm}.vmbus"))
}

/// Path of a guest's control socket.
pub fn guest_socket(run_dir: &Path, lab: &str, vm: &str) -> PathBuf {
    lab_dir(run_dir, lab).join(format!("{vm}.ctl"))
}

/// Path of the host's control socket.
pub fn host_socket(run_dir: &Path, lab: &str) -> PathBuf {
    lab_dir(run_dir, lab).join("host.ctl")
}

/// A request handler: takes the request object, returns the reply object (an
/// `{"error": "..."}` object for failures).
pub type Handler = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// Serves `handler` on `path` on a background thread, one thread per client.
pub fn serve(path: &Path, handler: Handler) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another running process", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut writer = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let reply = match serde_json::from_str::<Value>(&line) {
                        Ok(req) => handler(&req),
                        Err(e) => json!({ "error": format!("bad request: {e}") }),
                    };
                    line.clear();
                    if writeln!(writer, "{reply}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// Sends one request to the control socket at `path` and returns the reply; an
/// `{"error": ...}` reply becomes an error.
pub fn request(path: &Path, req: &Value) -> Result<Value> {
    let mut s = UnixStream::connect(path).with_context(|| {
        format!(
            "connect to {} (is the process running? see `hvnet lab --keep`)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let reply: Value = serde_json::from_str(&line).context("malformed reply")?;
    if let Some(e) = reply.get("error").and_then(Value::as_str) {
        bail!("{e}");
    }
    Ok(reply)
}
