//! Iteration orders of Open vSwitch's C hash maps. Where OVS's tools print
//! rows or JSON members in whatever order their `hmap`/`shash` holds them,
//! output that is byte-identical to theirs has to visit them in that order
//! too.

use uuid::Uuid;

/// OVS's `hash_string(s, 0)` (`hash_bytes`, the murmur-based version that
/// generic x86-64 and most other builds use).
pub fn hash_string(s: &[u8]) -> u32 {
    fn mhash_add(hash: u32, data: u32) -> u32 {
        let mut h = hash;
        if data != 0 {
            h ^= data.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
        }
        h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
    }
    fn mhash_finish(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
    let mut h = 0u32;
    let mut chunks = s.chunks_exact(4);
    for c in &mut chunks {
        h = mhash_add(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut t = [0u8; 4];
        t[..rem.len()].copy_from_slice(rem);
        h = mhash_add(h, u32::from_le_bytes(t));
    }
    mhash_finish(h ^ s.len() as u32)
}

/// OVS's `hmap` (include/openvswitch/hmap.h), for the order in which it
/// iterates: buckets in index order, each bucket's chain from its head,
/// where insertions go; it grows its buckets as `hmap_insert` does.
pub struct HashMap<T> {
    mask: usize,
    /// Each chain is kept tail first, so that pushing adds at its head.
    buckets: Vec<Vec<(T, usize)>>,
    n: usize,
}

impl<T> Default for HashMap<T> {
    fn default() -> Self {
        HashMap { mask: 0, buckets: vec![Vec::new()], n: 0 }
    }
}

impl<T> HashMap<T> {
    fn calc_mask(capacity: usize) -> usize {
        let mut mask = capacity / 2;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        mask | ((mask & 1) << 1)
    }

    pub fn insert(&mut self, item: T, hash: usize) {
        self.buckets[hash & self.mask].push((item, hash));
        self.n += 1;
        if self.n / 2 > self.mask {
            let new_mask = Self::calc_mask(self.n);
            if new_mask > self.mask {
                let mut new: Vec<Vec<(T, usize)>> = (0..=new_mask).map(|_| Vec::new()).collect();
                for chain in std::mem::take(&mut self.buckets) {
                    for (item, hash) in chain.into_iter().rev() {
                        new[hash & new_mask].push((item, hash));
                    }
                }
                self.buckets = new;
                self.mask = new_mask;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.buckets.iter().flat_map(|chain| chain.iter().rev().map(|(x, _)| x))
    }
}

/// The order in which OVS's `SHASH_FOR_EACH` visits the keys of an `shash`
/// they were inserted into in the given order (a parsed JSON object's
/// members, in file order): indexes into `keys`.
pub fn shash_order<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let mut hm = HashMap::default();
    for (i, k) in keys.into_iter().enumerate() {
        hm.insert(i, hash_string(k.as_bytes()) as usize);
    }
    hm.iter().copied().collect()
}

/// OVS's `uuid_hash`: the first 32 bits of the uuid.
pub fn uuid_hash(u: &Uuid) -> u32 {
    let b = u.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The order in which OVS's IDL iterates a table's rows (`hmap` keyed by
/// `uuid_hash`), for rows that arrived in one update: the IDL inserted them
/// as it walked the update's JSON object, i.e. in `shash` order of their uuid
/// strings (taken here in uuid order, the server's own order being unknown;
/// it only matters for uuids whose string hashes share a bucket). Not
/// modelled: rows the IDL creates early because another table's row refers
/// to them.
pub fn idl_row_order(uuids: &[Uuid]) -> Vec<Uuid> {
    let mut sorted: Vec<Uuid> = uuids.to_vec();
    sorted.sort();
    let strings: Vec<String> = sorted.iter().map(|u| u.to_string()).collect();
    let mut rows = HashMap::default();
    for i in shash_order(strings.iter().map(|s| s.as_str())) {
        rows.insert(sorted[i], uuid_hash(&sorted[i]) as usize);
    }
    rows.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_hash_is_the_first_word() {
        let u: Uuid = "0a1b2c3d-0000-4000-8000-000000000000".parse().unwrap();
        assert_eq!(uuid_hash(&u), 0x0a1b_2c3d);
    }

    #[test]
    fn rows_follow_bucket_order() {
        // Three rows: the map has 4 buckets (mask 3), so the low two bits
        // of the first word order them, whatever the uuids' own order.
        let us: Vec<Uuid> = [
            "00000003-0000-4000-8000-000000000000",
            "00000001-0000-4000-8000-000000000000",
            "00000006-0000-4000-8000-000000000000",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let order: Vec<u32> = idl_row_order(&us).iter().map(uuid_hash).collect();
        assert_eq!(order, vec![1, 6, 3]);
    }
}
