//! The flow tables and the traffic that exercises them.
//!
//! `oxvs_16masks` holds `N_MASKS` × `FLOWS_PER_MASK` = 10,000 flows. Mask `i`
//! matches `ipv4(src=<prefix of length 16+i>,proto=17,frag=no),udp(dst=10000+i)`:
//! the UDP port alone keeps flows of different masks apart (megaflows must
//! never overlap), and the prefixes keep the 625 flows of a mask apart. The
//! traffic has `FRAMES_PER_MASK` frames per mask, so every mask is hit.
use oxvs_userspace::dpif::{EbpfDatapath, odp};

use anyhow::{Context, Result};

use super::frame::{Frame, Udp, udp_frame};

pub const N_MASKS: u32 = 16;
pub const FLOWS_PER_MASK: u32 = 625;
/// 64 distinct frames in the send batch, 4 per mask.
pub const FRAMES_PER_MASK: u32 = 4;
const UDP_DST_BASE: u16 = 10_000;
/// A destination port no flow matches: the miss.
const UDP_DST_MISS: u16 = 9_999;
const DST_IP: [u8; 4] = [10, 255, 0, 2];

fn prefix_len(mask: u32) -> u32 {
    16 + mask
}

/// Source prefix `j` of mask `i`: 10.0.0.0 + j·2^(32-len), distinct for j < 625
/// at every length from 16 (10.0.0.0/16 … 12.112.0.0/16) to 31.
fn flow_src(mask: u32, j: u32) -> u32 {
    0x0a00_0000 + (j << (32 - prefix_len(mask)))
}

fn dotted(a: u32) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

/// The flow `j` of mask `i`, in OVS's datapath syntax.
pub fn flow_text(mask: u32, j: u32) -> String {
    let len = prefix_len(mask);
    let netmask = u32::MAX << (32 - len);
    format!(
        "in_port(1),eth(),eth_type(0x0800),ipv4(src={}/{},proto=17,frag=no),udp(dst={})",
        dotted(flow_src(mask, j)),
        dotted(netmask),
        UDP_DST_BASE + mask as u16
    )
}

/// Installs one flow `match_text` → output to port 2.
fn put(dp: &mut EbpfDatapath, match_text: &str) -> Result<()> {
    let m = odp::parse_flow(match_text).with_context(|| format!("parse flow {match_text}"))?;
    let acts = odp::parse_actions("2").context("parse actions")?;
    dp.flow_put(&m.key, &m.mask, &acts, true, false, false).with_context(|| format!("flow_put {match_text}"))
}

/// `oxvs_1flow`: everything from port 1 goes to port 2.
pub fn install_one(dp: &mut EbpfDatapath) -> Result<()> {
    put(dp, "in_port(1),eth()")
}

/// `oxvs_16masks`: the 10,000 flows, mask 0 first (so mask 15 is last in the
/// datapath's order until `sort_masks` reorders by hits).
pub fn install_16masks(dp: &mut EbpfDatapath) -> Result<()> {
    for i in 0..N_MASKS {
        for j in 0..FLOWS_PER_MASK {
            put(dp, &flow_text(i, j))?;
        }
    }
    Ok(())
}

/// The mask of flow set `i`, as the datapath stores it (to find a mask's
/// place in the lookup order).
pub fn mask_key(i: u32) -> Result<oxvs_dp_abi::FlowKey> {
    Ok(odp::parse_flow(&flow_text(i, 0)).context("parse flow")?.mask)
}

/// A frame hitting flow `j` of mask `i` (a host inside the flow's prefix).
pub fn frame_for(mask: u32, j: u32, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Frame {
    let src = flow_src(mask, j) + 1; // the host part is at least one bit
    let u = Udp {
        src_ip: src.to_be_bytes(),
        dst_ip: DST_IP,
        src_port: 4000 + j as u16,
        dst_port: UDP_DST_BASE + mask as u16,
    };
    udp_frame(dst_mac, src_mac, u)
}

/// The send batch, the same for every configuration: `FRAMES_PER_MASK`
/// flows of every mask, interleaved so that consecutive frames hit different
/// masks (as mixed traffic would).
pub fn traffic(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<Frame> {
    let spread = FLOWS_PER_MASK / FRAMES_PER_MASK;
    (0..FRAMES_PER_MASK)
        .flat_map(|k| (0..N_MASKS).map(move |i| (i, k * spread + i % spread)))
        .map(|(i, j)| frame_for(i, j, dst_mac, src_mac))
        .collect()
}

/// A frame no flow of `oxvs_16masks` matches.
pub fn miss_frame(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Frame {
    let u = Udp { src_ip: [10, 0, 0, 1], dst_ip: DST_IP, src_port: 4000, dst_port: UDP_DST_MISS };
    udp_frame(dst_mac, src_mac, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_parse_and_never_overlap() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..N_MASKS {
            for j in 0..FLOWS_PER_MASK {
                let m = odp::parse_flow(&flow_text(i, j)).unwrap();
                assert!(seen.insert((m.mask, m.key)), "flow {i}/{j} repeats");
            }
        }
        let masks: std::collections::HashSet<_> = (0..N_MASKS).map(|i| mask_key(i).unwrap()).collect();
        assert_eq!(masks.len(), N_MASKS as usize);
        assert_eq!(traffic([0; 6], [0; 6]).len(), (N_MASKS * FRAMES_PER_MASK) as usize);
    }
}
