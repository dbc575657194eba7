//! Incremental Internet checksum update (RFC 1624) for the XDP hook, where the
//! frame holds the full checksum. The tc hook uses the kernel helpers instead.

/// Max offset of a checksum field we touch; keeps the verifier's range small.
const OFF_LIMIT: usize = 0x3ff;

/// Folds a 64-bit one's complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Replaces `from` by `to` (2 or 4 bytes, as loaded from the frame) in the sum
/// stored at `csum_off`. `udp`: a zero checksum means "none" and stays zero, and
/// a result of zero is sent as 0xffff.
#[inline(always)]
pub fn xdp_replace(data: usize, end: usize, csum_off: usize, from: u32, to: u32, size: u64, udp: bool) -> bool {
    let off = csum_off & OFF_LIMIT;
    if data + off + 2 > end {
        return false;
    }
    let p = (data + off) as *mut u16;
    // SAFETY: bounds checked above.
    let old = unsafe { p.read_unaligned() };
    if udp && old == 0 {
        return true;
    }
    let nf = !from;
    let mut s = (!old) as u64;
    if size == 4 {
        s += (nf >> 16) as u64 + (nf & 0xffff) as u64 + (to >> 16) as u64 + (to & 0xffff) as u64;
    } else {
        s += (nf & 0xffff) as u64 + (to & 0xffff) as u64;
    }
    let mut new = !fold(s);
    if udp && new == 0 {
        new = 0xffff;
    }
    // SAFETY: bounds checked above.
    unsafe { p.write_unaligned(new) };
    true
}
