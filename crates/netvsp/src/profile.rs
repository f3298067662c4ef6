//! Host profiles: which Windows release the emulated host behaves like (PROTOCOL.md §4.1).

use std::fmt;
use std::str::FromStr;

/// A Windows host release whose protocol versions and offloads the host reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostProfile {
    /// Windows Server 2012 R2: VMBus 3.0, NVSP 5, TCP checksum offload only.
    Ws2012R2,
    /// Windows Server 2016: VMBus 4.0, NVSP 6, TCP+UDP checksum offload.
    Ws2016,
    /// Windows Server 2019: VMBus 5.2, NVSP 6.1, RSC.
    Ws2019,
    /// Azure: VMBus 5.3, NVSP 6.1, RSC, SR-IOV.
    #[default]
    Azure,
}

impl HostProfile {
    /// All profiles, oldest first.
    pub const ALL: [HostProfile; 4] = [Self::Ws2012R2, Self::Ws2016, Self::Ws2019, Self::Azure];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws2012R2 => "ws2012r2",
            Self::Ws2016 => "ws2016",
            Self::Ws2019 => "ws2019",
            Self::Azure => "azure",
        }
    }

    /// Highest VMBus version the host accepts.
    pub fn max_vmbus_version(self) -> u32 {
        use vmbus::channel_msg::version;
        match self {
            Self::Ws2012R2 => version::WS2012R2,
            Self::Ws2016 => version::WS2016,
            Self::Ws2019 => version::WS2019,
            Self::Azure => version::WS2022,
        }
    }

    /// Highest NVSP version the host accepts.
    pub fn max_nvsp_version(self) -> u32 {
        match self {
            Self::Ws2012R2 => nvsp::version::V5,
            Self::Ws2016 => nvsp::version::V6,
            Self::Ws2019 | Self::Azure => nvsp::version::V6_1,
        }
    }

    /// Whether UDP checksum offload is offered (TCP always is).
    pub fn udp_checksum_offload(self) -> bool {
        !matches!(self, Self::Ws2012R2)
    }

    /// Whether receive segment coalescing is offered.
    pub fn rsc(self) -> bool {
        matches!(self, Self::Ws2019 | Self::Azure)
    }
}

impl fmt::Display for HostProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HostProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown host profile {s:?}: use ws2012r2, ws2016, ws2019 or azure")
            })
    }
}
