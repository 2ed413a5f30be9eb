//! What the mirror keeps about each remote Service, in one map: what it last
//! wrote (so that it writes only changes), how the mirror stands, and its
//! failed writes in a row; and how that record is corrected when the local
//! objects are seen again. Synchronous, no client.
//!
//! A watch that lists again (after an expired resourceVersion, an API server
//! restart) delivers no Delete for what went meanwhile: the new list is
//! compared with the record, and what is missing or changed is forgotten, so
//! that the next pass writes it again. A periodic resync forgets everything.

use std::collections::HashMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::{
    index::Key,
    mirror::{service_drifted, slice_drifted},
    status::Outcome,
};

/// What was written for one remote Service.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// The mirror Service as written (not as it is live).
    pub service: Option<Service>,
    /// The uid of the mirror Service that was written.
    pub uid: Option<String>,
    pub slice: Option<EndpointSlice>,
}

/// Everything kept about one remote Service.
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    pub written: Written,
    pub outcome: Outcome,
    /// Failed passes in a row, for the backoff.
    pub failures: u32,
}

/// The record, by remote Service.
#[derive(Debug, Default)]
pub struct Record(HashMap<Key, KeyState>);

impl Record {
    /// What was written for `remote`, if anything is known.
    pub fn get(&self, remote: &Key) -> Option<&Written> {
        self.0.get(remote).map(|s| &s.written)
    }

    pub fn get_mut(&mut self, remote: &Key) -> Option<&mut Written> {
        self.0.get_mut(remote).map(|s| &mut s.written)
    }

    pub fn entry(&mut self, remote: Key) -> &mut Written {
        &mut self.state(remote).written
    }

    /// Everything kept about `remote`.
    pub fn state(&mut self, remote: Key) -> &mut KeyState {
        self.0.entry(remote).or_default()
    }

    /// How the mirror of `remote` stands.
    pub fn outcome(&self, remote: &Key) -> &Outcome {
        const PENDING: &Outcome = &Outcome::Pending;
        self.0.get(remote).map_or(PENDING, |s| &s.outcome)
    }

    /// Forgets what was written for `remote`: it is written again.
    pub fn remove(&mut self, remote: &Key) {
        if let Some(s) = self.0.get_mut(remote) {
            s.written = Written::default();
        }
    }

    /// Drops everything about `remote` (its Service is gone).
    pub fn forget(&mut self, remote: &Key) {
        self.0.remove(remote);
    }

    /// Forgets what was written (a periodic resync, a new spec): every
    /// mirror is written again on its next pass.
    pub fn clear(&mut self) {
        for s in self.0.values_mut() {
            s.written = Written::default();
        }
    }

    /// Drops everything (the Link went).
    pub fn reset(&mut self) {
        self.0.clear();
    }

    /// How many remote Services are kept: for tests that nothing leaks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A full list of this Link's mirror Services: forgets those written
    /// that are missing, replaced (another uid) or changed. Returns their
    /// remote Services.
    pub fn relisted_services(&mut self, listed: &[Service]) -> Vec<Key> {
        let live: HashMap<Key, &Service> = listed
            .iter()
            .filter_map(|s| Some((Key::of(&s.metadata)?, s)))
            .collect();
        let mut repair = vec![];
        for (remote, state) in &mut self.0 {
            let w = &mut state.written;
            let Some(desired) = &w.service else { continue };
            let Some(local) = Key::of(&desired.metadata) else {
                continue;
            };
            let gone = match live.get(&local) {
                None => true,
                Some(l) => w.uid.is_some() && l.metadata.uid != w.uid,
            };
            if gone {
                // Its slice went with it (owned by the Service).
                *w = Written::default();
                repair.push(remote.clone());
            } else if live
                .get(&local)
                .is_some_and(|l| service_drifted(l, desired))
            {
                w.service = None;
                repair.push(remote.clone());
            }
        }
        repair.sort();
        repair
    }

    /// A full list of this Link's mirror slices: forgets the slices written
    /// that are missing or changed. Returns their remote Services.
    pub fn relisted_slices(&mut self, listed: &[EndpointSlice]) -> Vec<Key> {
        let live: HashMap<Key, &EndpointSlice> = listed
            .iter()
            .filter_map(|s| Some((Key::of(&s.metadata)?, s)))
            .collect();
        let mut repair = vec![];
        for (remote, state) in &mut self.0 {
            let w = &mut state.written;
            let Some(desired) = &w.slice else { continue };
            let Some(local) = Key::of(&desired.metadata) else {
                continue;
            };
            let stale = live.get(&local).is_none_or(|l| slice_drifted(l, desired));
            if stale {
                w.slice = None;
                repair.push(remote.clone());
            }
        }
        repair.sort();
        repair
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn svc(name: &str, uid: &str, app: &str) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.metadata.uid = Some(uid.into());
        s.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        s
    }

    fn slice(name: &str, ready: bool) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.address_type = "IPv4".into();
        s.endpoints = vec![Endpoint {
            addresses: vec!["127.20.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        }];
        s
    }

    fn written(name: &str, uid: &str) -> Written {
        let mut desired = svc(name, uid, name);
        desired.metadata.uid = None;
        Written {
            service: Some(desired),
            uid: Some(uid.into()),
            slice: Some(slice(&format!("{name}-gateway"), true)),
        }
    }

    fn record() -> Record {
        let mut r = Record::default();
        for (remote, mirror, uid) in [
            ("a", "a-west", "u1"),
            ("b", "b-west", "u2"),
            ("c", "c-west", "u3"),
            ("d", "d-west", "u4"),
        ] {
            *r.entry(Key::new("ns", remote)) = written(mirror, uid);
        }
        r
    }

    #[test]
    fn a_relist_forgets_what_went_while_the_watch_was_down() {
        let mut r = record();
        let repair = r.relisted_services(&[
            // a: as written.
            svc("a-west", "u1", "a-west"),
            // b: deleted and made again by someone else.
            svc("b-west", "other", "b-west"),
            // c: edited.
            svc("c-west", "u3", "edited"),
            // d: deleted.
        ]);
        assert_eq!(
            repair,
            [
                Key::new("ns", "b"),
                Key::new("ns", "c"),
                Key::new("ns", "d")
            ]
        );
        let a = r.get(&Key::new("ns", "a")).unwrap();
        assert!(a.service.is_some() && a.slice.is_some(), "a stays");
        let b = r.get(&Key::new("ns", "b")).unwrap();
        assert!(b.service.is_none() && b.uid.is_none() && b.slice.is_none());
        let c = r.get(&Key::new("ns", "c")).unwrap();
        assert!(c.service.is_none() && c.slice.is_some(), "only c's Service");
        // Nothing changed since: nothing more to repair.
        assert!(
            r.relisted_services(&[svc("a-west", "u1", "a-west")])
                .is_empty()
        );
    }

    #[test]
    fn a_relist_forgets_slices_deleted_or_edited_meanwhile() {
        let mut r = record();
        let repair = r.relisted_slices(&[
            slice("a-west-gateway", true),
            slice("b-west-gateway", false),
            slice("c-west-gateway", true),
        ]);
        assert_eq!(repair, [Key::new("ns", "b"), Key::new("ns", "d")]);
        assert!(r.get(&Key::new("ns", "d")).unwrap().slice.is_none());
        assert!(
            r.get(&Key::new("ns", "d")).unwrap().service.is_some(),
            "the Service is another watch's business"
        );
        assert!(r.get(&Key::new("ns", "a")).unwrap().slice.is_some());
        r.clear();
        let a = r.get(&Key::new("ns", "a")).unwrap();
        assert!(
            a.service.is_none() && a.slice.is_none() && a.uid.is_none(),
            "a resync forgets all that was written"
        );
        r.state(Key::new("ns", "a")).outcome = Outcome::Mirrored;
        r.clear();
        assert_eq!(
            r.outcome(&Key::new("ns", "a")),
            &Outcome::Mirrored,
            "and keeps how the mirrors stand"
        );
        r.forget(&Key::new("ns", "a"));
        assert_eq!(r.outcome(&Key::new("ns", "a")), &Outcome::Pending);
        assert_eq!(r.len(), 3);
    }
}
