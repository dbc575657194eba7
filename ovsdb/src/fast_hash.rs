//! Hash maps and sets for the server's hot paths (uuid-names, reference
//! counts, index keys), hashed with foldhash rather than std's SipHash: a
//! transaction adding 20,000 rows hashes each uuid and index key several
//! times, and SipHash was a visible part of its cost. foldhash is seeded
//! per process, so keys chosen by a client cannot be aimed at one bucket
//! in advance.
use std::collections::{HashMap, HashSet};

pub type BuildHasher = foldhash::fast::RandomState;
pub type FastMap<K, V> = HashMap<K, V, BuildHasher>;
pub type FastSet<K> = HashSet<K, BuildHasher>;

/// An empty map with room for `n` entries.
pub fn map_with_capacity<K, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, BuildHasher::default())
}

/// An empty set with room for `n` entries.
pub fn set_with_capacity<K>(n: usize) -> FastSet<K> {
    FastSet::with_capacity_and_hasher(n, BuildHasher::default())
}
