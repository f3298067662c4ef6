//! Network namespaces for the lab's VMs, made and removed with iproute2's `ip`.
//!
//! A namespace made here is named after the VM (`vm1`, `vm2`, …) so that a user can run
//! `ip netns exec vm1 <anything>` while the lab runs. Threads that must act inside a VM
//! (its guest driver creating the TAP, the lab's traffic) enter the namespace with
//! `setns(2)`, which affects only the calling thread.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| {
        "cannot run `ip`: install iproute2 (apt-get install -y iproute2)".to_string()
    })?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Path of a named namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates a named namespace with its loopback up. Fails if it already exists, so that
/// the lab never takes over a namespace it did not make.
pub fn create(name: &str) -> Result<()> {
    if exists(name) {
        bail!(
            "network namespace {name} already exists (a lab still running, or left over: \
             `ip netns del {name}` if it is stale)"
        );
    }
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a named namespace (and with it every interface left in it).
pub fn delete(name: &str) -> Result<()> {
    if exists(name) {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

/// Moves the calling thread into a named namespace.
pub fn enter(name: &str) -> Result<()> {
    let f = std::fs::File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("enter network namespace {name} (needs root)"))?;
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
}
