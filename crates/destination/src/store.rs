//! A map of one kind of object with a secondary index, so that the index
//! finds a Service by ClusterIP, a Service's slices, a pod by IP and an
//! apex's splits without scanning everything.

use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
};

#[derive(Debug)]
pub struct Store<K, T, S> {
    items: HashMap<K, T>,
    by: HashMap<S, BTreeSet<K>>,
    key: fn(&T) -> K,
    secondary: fn(&T) -> Vec<S>,
}

impl<K, T, S> Store<K, T, S>
where
    K: Clone + Eq + Hash + Ord,
    S: Eq + Hash,
{
    pub fn new(key: fn(&T) -> K, secondary: fn(&T) -> Vec<S>) -> Self {
        Self {
            items: HashMap::new(),
            by: HashMap::new(),
            key,
            secondary,
        }
    }

    /// Inserts or replaces; returns what it replaced.
    pub fn apply(&mut self, t: T) -> Option<T> {
        let k = (self.key)(&t);
        let old = self.delete(&k);
        for s in (self.secondary)(&t) {
            self.by.entry(s).or_default().insert(k.clone());
        }
        self.items.insert(k, t);
        old
    }

    pub fn delete(&mut self, k: &K) -> Option<T> {
        let old = self.items.remove(k)?;
        for s in (self.secondary)(&old) {
            if let Some(set) = self.by.get_mut(&s) {
                set.remove(k);
                if set.is_empty() {
                    self.by.remove(&s);
                }
            }
        }
        Some(old)
    }

    pub fn reset(&mut self, all: Vec<T>) {
        self.items.clear();
        self.by.clear();
        for t in all {
            self.apply(t);
        }
    }

    pub fn key_of(&self, t: &T) -> K {
        (self.key)(t)
    }

    pub fn get(&self, k: &K) -> Option<&T> {
        self.items.get(k)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.values()
    }

    /// The items whose secondary keys include `s`, in key order.
    pub fn by<'a>(&'a self, s: &S) -> impl Iterator<Item = &'a T> + 'a {
        self.by
            .get(s)
            .into_iter()
            .flatten()
            .filter_map(|k| self.items.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tagged = Store<&'static str, (&'static str, Vec<u8>), u8>;

    fn names(s: &Tagged, tag: u8) -> Vec<&'static str> {
        s.by(&tag).map(|t| t.0).collect()
    }

    #[test]
    fn the_secondary_index_follows_applies_and_deletes() {
        // (name, tags)
        let mut s: Tagged = Store::new(|t| t.0, |t| t.1.clone());
        s.apply(("a", vec![1, 2]));
        s.apply(("b", vec![2]));
        assert_eq!(names(&s, 2), ["a", "b"]);
        assert_eq!(s.apply(("a", vec![3])).map(|t| t.1), Some(vec![1, 2]));
        assert_eq!(names(&s, 1), Vec::<&str>::new());
        assert_eq!(names(&s, 2), ["b"]);
        assert_eq!(names(&s, 3), ["a"]);
        s.delete(&"b");
        assert!(!s.by.contains_key(&2), "empty sets go");
        s.reset(vec![("c", vec![3])]);
        assert_eq!(names(&s, 3), ["c"]);
        assert_eq!(s.values().count(), 1);
    }
}
