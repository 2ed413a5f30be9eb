//! Host-wide sysctls. The kubelet sets some of them for the whole machine
//! (they are not per network namespace), and two cAdvisors need more inotify
//! instances than the default. The first testbed with real nodes records the
//! host's values; the last one to go down puts them back.

use std::{collections::BTreeMap, fs, path::Path};

use crate::{Error, node::net};

/// What the kubelet (or the testbed for it) changes host-wide.
pub const HOST_SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "fs.inotify.max_user_instances",
    "fs.inotify.max_user_watches",
];

const RECORD: &str = "/run/tandem/host-sysctls.json";

fn write(key: &str, value: &str) -> Result<(), Error> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    fs::write(&path, value).map_err(|e| Error::io(&path, e))
}

/// Records the host's values (unless a running testbed already has), then
/// raises the inotify limits.
pub fn record_and_set() -> Result<(), Error> {
    let record = Path::new(RECORD);
    if !record.exists() {
        let values: BTreeMap<&str, String> = HOST_SYSCTLS
            .iter()
            .filter_map(|k| Some((*k, net::read_sysctl(k)?)))
            .collect();
        let parent = record.parent().expect("a parent");
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let json = serde_json::to_string_pretty(&values).expect("a map serializes");
        fs::write(record, json).map_err(|e| Error::io(record, e))?;
    }
    for (key, min) in [
        ("fs.inotify.max_user_instances", 512u64),
        ("fs.inotify.max_user_watches", 524288),
    ] {
        let now: u64 = net::read_sysctl(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if now < min {
            write(key, &min.to_string())?;
        }
    }
    Ok(())
}

/// Puts the recorded values back (when the last testbed goes down).
pub fn restore() -> Result<(), Error> {
    let record = Path::new(RECORD);
    if !record.exists() {
        return Ok(());
    }
    let text = fs::read_to_string(record).map_err(|e| Error::io(record, e))?;
    let values: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| Error::Teardown {
            step: format!("restoring host sysctls from {RECORD}"),
            detail: e.to_string(),
        })?;
    for (key, value) in &values {
        if net::read_sysctl(key).as_deref() != Some(value.as_str()) {
            write(key, value)?;
        }
    }
    fs::remove_file(record).map_err(|e| Error::io(record, e))
}
