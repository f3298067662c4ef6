//! The host process's assembly: the switch, one NIC per VM and one VMBus endpoint per VM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use vmbus::guid::Guid;
use vmbus::server::{Server, ServerConfig, ServerStats};
use vmbus::trace::Tracer;

use crate::nic::{Nic, NicConfig};
use crate::profile::HostProfile;
use crate::vswitch::Switch;

/// One VM the host serves.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The VM's name.
    pub name: String,
    /// Where its VMBus socket lives.
    pub socket: PathBuf,
    /// The MAC address its NIC gets.
    pub mac: [u8; 6],
}

/// How to run the host.
pub struct HostConfig {
    /// The VMs.
    pub vms: Vec<VmSpec>,
    /// Which Windows host to behave like.
    pub profile: HostProfile,
    /// Trace sink for every VM's control messages.
    pub tracer: Option<Arc<Tracer>>,
    /// Queues each NIC offers (primary + subchannels, 1..=64;
    /// [`crate::queues::DEFAULT_QUEUES`] by default).
    pub queues: u16,
}

struct Vm {
    spec: VmSpec,
    nic: Arc<Nic>,
    server_stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A running host.
pub struct Host {
    switch: Arc<Switch>,
    vms: Vec<Vm>,
    profile: HostProfile,
}

impl Host {
    /// Binds every VM's socket and starts serving.
    pub fn start(config: HostConfig) -> std::io::Result<Self> {
        let switch = Arc::new(Switch::default());
        let mut vms = Vec::new();
        for (i, spec) in config.vms.into_iter().enumerate() {
            let nic = Nic::new(
                NicConfig {
                    name: spec.name.clone(),
                    mac: spec.mac,
                    profile: config.profile,
                    instance_id: instance_guid(&spec.name, i as u32),
                    // 100 Gbit/s, in 100 bit/s units, as Azure reports for accelerated NICs.
                    link_speed: 1_000_000_000,
                    queues: config.queues,
                    tracer: config.tracer.clone(),
                },
                switch.clone(),
            );
            let server = Server::bind(
                ServerConfig {
                    path: spec.socket.clone(),
                    max_version: config.profile.max_vmbus_version(),
                    tracer: config.tracer.clone(),
                },
                nic.clone(),
            )?;
            let stop = server.stop_flag();
            let server_stats = server.stats();
            let thread = std::thread::Builder::new()
                .name(format!("vmbus-{}", spec.name))
                .spawn(move || server.run())?;
            vms.push(Vm {
                spec,
                nic,
                server_stats,
                stop,
                thread: Some(thread),
            });
        }
        Ok(Self {
            switch,
            vms,
            profile: config.profile,
        })
    }

    /// The profile the host follows.
    pub fn profile(&self) -> HostProfile {
        self.profile
    }

    /// The switch.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// The NIC of VM `name`.
    pub fn nic(&self, name: &str) -> Option<&Arc<Nic>> {
        self.vms
            .iter()
            .find(|v| v.spec.name == name)
            .map(|v| &v.nic)
    }

    /// Every VM with its NIC and control-plane counters.
    pub fn vms(&self) -> impl Iterator<Item = (&VmSpec, &Arc<Nic>, &Arc<ServerStats>)> {
        self.vms.iter().map(|v| (&v.spec, &v.nic, &v.server_stats))
    }

    /// Stops every endpoint and removes the sockets.
    pub fn stop(&mut self) {
        for vm in &mut self.vms {
            vm.stop.store(true, Ordering::Relaxed);
        }
        for vm in &mut self.vms {
            if let Some(t) = vm.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_file(&vm.spec.socket);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A stable instance GUID per VM name (FNV-1a of the name, index in the last bytes).
fn instance_guid(name: &str, index: u32) -> Guid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = index.to_be_bytes();
    Guid::from_fields(
        (h >> 32) as u32,
        (h >> 16) as u16,
        h as u16,
        [0x80, 0x4e, 0x68, 0x76, b[0], b[1], b[2], b[3]],
    )
}
