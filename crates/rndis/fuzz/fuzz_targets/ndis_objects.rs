//! Fuzzes the NDIS object parsers carried in OID information buffers: offload
//! capabilities and parameters, RSS capabilities and parameters, the MAC parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rndis::config_param::ConfigParameter;
use rndis::offload::{NdisOffload, OffloadParameters};
use rndis::rss::{RssCapabilities, parse_rss_parameters};

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = NdisOffload::parse(data) {
        let _ = o.guest_offloads();
    }
    let _ = OffloadParameters::parse(data);
    let _ = RssCapabilities::parse(data);
    let queues = data.first().map_or(1, |&b| u32::from(b % 65));
    let _ = parse_rss_parameters(data, queues);
    if let Ok(p) = ConfigParameter::parse(data) {
        let _ = p.mac_address();
    }
});
