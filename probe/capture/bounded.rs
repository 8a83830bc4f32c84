//! The one eviction rule of every analysis table (fragments, DNS queries,
//! TCP connections, DNS-over-TCP streams): when a table reaches its cap, the
//! quarter least recently active goes, in one O(n) pass, so a flood costs
//! amortised O(1) per packet and memory stays under the documented bound.
//! Callers finalise what they evict (its findings count) and count it.
//!
//! Each table is made with room for twice its cap: a hash table whose
//! removed entries leave tombstones rehashes in place only while it is at
//! most half full, and would otherwise double its memory.

use std::collections::HashMap;
use std::hash::Hash;

/// A table for at most `cap` entries that never grows past its first
/// allocation.
pub fn table<K, V>(cap: usize) -> HashMap<K, V> {
    HashMap::with_capacity(2 * cap)
}

/// The keys of the `len / 4` (at least one) entries whose `last_active` is
/// oldest.
pub fn oldest_quarter<K: Clone + Eq + Hash, V>(
    map: &HashMap<K, V>,
    last_active: impl Fn(&V) -> i64,
) -> Vec<K> {
    let mut ages: Vec<(i64, K)> = map
        .iter()
        .map(|(k, v)| (last_active(v), k.clone()))
        .collect();
    let count = (ages.len() / 4).max(1).min(ages.len());
    if count < ages.len() {
        ages.select_nth_unstable_by(count, |a, b| a.0.cmp(&b.0));
    }
    ages.truncate(count);
    ages.into_iter().map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_recently_active_quarter() {
        let map: HashMap<u32, i64> = (0..100u32).map(|k| (k, i64::from(100 - k))).collect();
        let mut old = oldest_quarter(&map, |v| *v);
        old.sort_unstable();
        assert_eq!(old, (75..100).collect::<Vec<_>>());
        let one: HashMap<u32, i64> = [(1, 5)].into();
        assert_eq!(oldest_quarter(&one, |v| *v), vec![1]);
        assert!(oldest_quarter(&HashMap::<u32, i64>::new(), |v| *v).is_empty());
    }
}
