//! A session's idempotency keys, kept as 64-bit hashes: the key itself is in the log (its
//! key block of the keyed append it rides on), where a lookup that finds a hash confirms it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// What an idempotency key names: the appends of one unit, from interaction id `first_id`
/// to `last_id`. The rest (the unit's LSNs and timestamp) is in the keyed append, which a
/// lookup reads anyway to confirm the key, so the index keeps no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keyed {
    /// The interaction id of the first append it names (the one carrying the key).
    pub(crate) first_id: u64,
    /// The interaction id of the last append it names.
    pub(crate) last_id: u64,
}

/// Hashes keys for [`Keys`], with a key chosen at random per process (SipHash), so nobody
/// can choose keys that collide.
#[derive(Debug, Default)]
pub(crate) struct KeyHasher(RandomState);

impl KeyHasher {
    /// The key's bytes in one write, without the length prefix `Hash for [u8]` adds (SipHash
    /// folds the total length in itself): a second, buffered write per key saved.
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        let mut h = self.0.build_hasher();
        h.write(key);
        h.finish()
    }
}

/// The hash of a key is already a keyed hash: the map uses it as is.
#[derive(Debug, Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A session's idempotency keys: what each names, by the key's hash (no copy of the key is
/// kept: a lookup's hit is a candidate, confirmed against the keyed append in the log).
///
/// Invariant: `order` holds every key of `map` and `exact` once, by ascending interaction
/// id, so forgetting the keys of removed messages costs what is removed. A key costs two
/// 16-byte entries: its hash and first id in `map`, its last id and hash in `order`. Two
/// keys of a session whose hashes collide (about one chance in 2^64 per pair): the later is
/// kept in `exact`, with its bytes.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// Hash → first interaction id named.
    map: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    /// (key, hash, what it names) of the keys whose hash another key of the session had.
    exact: Vec<(Box<[u8]>, u64, Keyed)>,
    /// (last interaction id named, hash), by ascending ids.
    order: Vec<(u64, u64)>,
}

impl Keys {
    /// Remembers `key` (hashed `hash`) as naming `keyed`.
    pub(crate) fn insert(&mut self, key: &[u8], hash: u64, keyed: Keyed) {
        match self.map.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.exact.push((key.into(), hash, keyed));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(keyed.first_id);
            }
        }
        self.order.push((keyed.last_id, hash));
    }

    /// The first interaction id `key` (hashed `hash`) names: exact when it collided with
    /// another key, else a candidate that may be another key with the same hash (see
    /// [`Keys`]).
    pub(crate) fn get(&self, key: &[u8], hash: u64) -> Option<u64> {
        if let Some((_, _, k)) = self.exact.iter().find(|(k, _, _)| **k == *key) {
            return Some(k.first_id);
        }
        self.map.get(&hash).copied()
    }

    /// The first interaction id every key names.
    pub(crate) fn first_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.map
            .values()
            .copied()
            .chain(self.exact.iter().map(|(_, _, k)| k.first_id))
    }

    /// Forgets the keys whose messages are not all among the first `keep`.
    pub(crate) fn keep(&mut self, keep: u64) {
        while let Some(&(last, hash)) = self.order.last() {
            if last <= keep {
                break;
            }
            self.order.pop();
            // The key popped is the exact entry of this hash and last id, if there is one
            // (the later of two colliding keys), else the map's.
            match self
                .exact
                .iter()
                .rposition(|(_, h, k)| *h == hash && k.last_id == last)
            {
                Some(i) => drop(self.exact.remove(i)),
                None => drop(self.map.remove(&hash)),
            }
        }
    }

    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.capacity() * (size_of::<(u64, u64)>() + 1)
            + self.order.capacity() * size_of::<(u64, u64)>()
            + self.exact.capacity() * size_of::<(Box<[u8]>, u64, Keyed)>()
            + self.exact.iter().map(|(k, _, _)| k.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(first_id: u64, count: u64) -> Keyed {
        Keyed {
            first_id,
            last_id: first_id + count - 1,
        }
    }

    #[test]
    fn colliding_keys_are_both_remembered_and_forgotten_with_their_messages() {
        let mut keys = Keys::default();
        // Two keys with one hash: the second is kept with its bytes.
        keys.insert(b"a", 7, keyed(1, 2));
        keys.insert(b"b", 7, keyed(3, 1));
        keys.insert(b"c", 9, keyed(4, 1));
        assert_eq!(keys.get(b"b", 7), Some(3));
        assert_eq!(keys.get(b"a", 7), Some(1));
        assert_eq!(keys.get(b"c", 9), Some(4));
        assert_eq!(keys.first_ids().count(), 3);
        keys.keep(3); // message 4 goes: "c" is forgotten
        assert_eq!(keys.get(b"c", 9), None);
        keys.keep(2); // message 3 goes: "b" (the exact one), not "a"
        assert_eq!(keys.get(b"b", 7), Some(1), "only a candidate is left");
        assert_eq!(keys.first_ids().collect::<Vec<_>>(), [1]);
        keys.keep(1); // message 2 goes: "a" too
        assert_eq!(keys.first_ids().count(), 0);
    }

    #[test]
    fn one_keep_past_several_keys_forgets_exactly_those_keys_despite_a_collision() {
        let mut keys = Keys::default();
        keys.insert(b"a", 7, keyed(1, 2));
        keys.insert(b"b", 7, keyed(3, 1)); // collides with "a": kept with its bytes
        keys.insert(b"c", 9, keyed(4, 1));
        keys.keep(2); // messages 3 and 4 go: "b" and "c", not "a"
        assert_eq!(keys.get(b"a", 7), Some(1));
        assert_eq!(keys.get(b"c", 9), None);
        assert_eq!(keys.first_ids().collect::<Vec<_>>(), [1]);
        // The later of two colliding keys goes first when its messages do.
        keys.insert(b"d", 7, keyed(3, 2));
        keys.insert(b"e", 7, keyed(5, 1));
        keys.keep(4);
        assert_eq!(keys.get(b"d", 7), Some(3));
        assert_eq!(
            keys.get(b"e", 7),
            Some(1),
            "only the map's candidate (\"a\") is left"
        );
        keys.keep(0);
        assert_eq!(keys.first_ids().count(), 0);
        assert_eq!(keys.len(), 0);
    }
}
