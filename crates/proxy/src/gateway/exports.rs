//! The exported Services: a synchronous set of `namespace/name` that the
//! Service watch keeps (apply, delete, reset after a list) and every
//! connection reads. No client and no `.await` here; the watch lives with
//! the `tandem gateway` command.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

/// The label that exports a Service, as Linkerd's multicluster reads it.
pub const EXPORT_LABEL: &str = "mirror.linkerd.io/exported";

/// Whether a Service's labels export it: `mirror.linkerd.io/exported=true`
/// (Linkerd compares the value exactly).
pub fn is_exported(labels: &BTreeMap<String, String>) -> bool {
    labels.get(EXPORT_LABEL).is_some_and(|v| v == "true")
}

/// A Service as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// The set of exported Services, shared by the watch and the connections.
#[derive(Clone, Debug, Default)]
pub struct Exports(Arc<RwLock<BTreeSet<ServiceRef>>>);

impl Exports {
    /// A Service was added or changed: in the set while it is exported.
    pub fn apply(&self, svc: ServiceRef, exported: bool) {
        let mut set = self.0.write().unwrap_or_else(|e| e.into_inner());
        if exported {
            set.insert(svc);
        } else {
            set.remove(&svc);
        }
    }

    /// A Service was deleted.
    pub fn delete(&self, svc: &ServiceRef) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(svc);
    }

    /// A full list arrived: exactly the exported Services of `all`.
    pub fn reset(&self, all: impl IntoIterator<Item = (ServiceRef, bool)>) {
        let fresh = all
            .into_iter()
            .filter(|(_, e)| *e)
            .map(|(s, _)| s)
            .collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        let key = ServiceRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str) -> ServiceRef {
        ServiceRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_label_must_say_true() {
        let labels = |v: Option<&str>| -> BTreeMap<String, String> {
            v.map(|v| (EXPORT_LABEL.to_string(), v.to_string()))
                .into_iter()
                .collect()
        };
        for (value, want) in [
            (Some("true"), true),
            (Some("false"), false),
            (Some("True"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(is_exported(&labels(value)), want, "{value:?}");
        }
    }

    #[test]
    fn apply_delete_and_reset() {
        let x = Exports::default();
        x.apply(svc("emojivoto", "emoji-svc"), true);
        x.apply(svc("emojivoto", "web-svc"), false);
        assert!(x.contains("emojivoto", "emoji-svc"));
        assert!(!x.contains("emojivoto", "web-svc"));
        assert!(!x.contains("other", "emoji-svc"), "namespaces are apart");
        // Unlabelled: gone.
        x.apply(svc("emojivoto", "emoji-svc"), false);
        assert!(x.is_empty());
        x.apply(svc("emojivoto", "emoji-svc"), true);
        x.delete(&svc("emojivoto", "emoji-svc"));
        assert!(x.is_empty());
        // A re-list replaces everything, dropping what went meanwhile.
        x.apply(svc("a", "gone"), true);
        x.reset([(svc("b", "kept"), true), (svc("b", "plain"), false)]);
        assert!(!x.contains("a", "gone"));
        assert!(x.contains("b", "kept"));
        assert_eq!(x.len(), 1);
    }
}
