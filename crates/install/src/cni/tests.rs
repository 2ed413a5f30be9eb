use std::path::Path;

use serde_json::json;

use super::*;
use crate::ImageOptions;

/// A bridge and portmap list, as a node's network leaves it.
const BRIDGE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "east",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "198.18.0.0/24" }]]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
"#;

/// [`BRIDGE`] with our entry, as [`patch`] writes it: the other plugins
/// as they were written.
const BRIDGE_PATCHED: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "east",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "198.18.0.0/24" }]]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    {
      "type": "tandem-cni",
      "capabilities": {
        "io.kubernetes.cri.pod-annotations": true
      }
    }
  ]
}
"#;

const OURS: &str =
    r#"{"type":"tandem-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true}}"#;

fn write(file: &str, text: &str) -> Edit {
    Edit::Write {
        file: file.into(),
        text: text.into(),
    }
}

/// The plugins' types of a written edit, in order.
fn types(edit: &Edit) -> Vec<String> {
    let Edit::Write { text, .. } = edit else {
        panic!("{edit:?}")
    };
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn containerd_reads_the_first_config_file_by_name() {
    for (names, want) in [
        (vec![], None),
        (vec!["README", "tandem-cni.kubeconfig"], None),
        (
            vec!["99-last.conflist", "10-first.conf"],
            Some("10-first.conf"),
        ),
        // A prefix sorts first: the .conf before its converted .conflist.
        (vec!["10-net.conflist", "10-net.conf"], Some("10-net.conf")),
        (vec!["10-net.conf.bak", "20-net.json"], Some("20-net.json")),
        (vec!["05-x.conf.json", "10-y.conf"], Some("05-x.conf.json")),
        // Byte order: upper case first, digits before letters.
        (vec!["a.conf", "B.conf", "1.conf"], Some("1.conf")),
        (vec!["a.conf", "B.conf"], Some("B.conf")),
        // The endings are case-sensitive, as in Go.
        (vec!["00-x.CONF", "10-y.conflist"], Some("10-y.conflist")),
        // Our temporary files are never candidates.
        (vec![".tandem-cni.42.tmp"], None),
        (vec![".conf"], Some(".conf")),
    ] {
        assert_eq!(choose_config(names.iter().copied()), want, "{names:?}");
    }
}

#[test]
fn the_entry_is_the_plugin_with_the_annotations_capability() {
    // Written with `type` first.
    assert_eq!(serde_json::to_string(&entry_json()).unwrap(), OURS);
    assert_eq!(
        entry(),
        json!({ "type": PLUGIN_TYPE, "capabilities": { POD_ANNOTATIONS_CAPABILITY: true } })
    );
}

#[test]
fn patching_appends_our_entry_and_keeps_the_rest() {
    let name = Path::new("10-east.conflist");
    assert_eq!(
        patch(name, BRIDGE).unwrap(),
        write("10-east.conflist", BRIDGE_PATCHED)
    );
    // Done once: the second time there is nothing to write.
    assert_eq!(patch(name, BRIDGE_PATCHED).unwrap(), Edit::Unchanged);
    assert!(has_entry(name, BRIDGE_PATCHED).unwrap());
    assert!(!has_entry(name, BRIDGE).unwrap());
}

#[test]
fn patching_cases() {
    let other = r#"{"type":"other"}"#;
    let changed =
        r#"{"type":"tandem-cni","capabilities":{"io.kubernetes.cri.pod-annotations":false}}"#;
    let reordered =
        r#"{"capabilities":{"io.kubernetes.cri.pod-annotations":true},"type":"tandem-cni"}"#;
    let list = |plugins: &[&str]| format!(r#"{{"name":"n","plugins":[{}]}}"#, plugins.join(","));
    for (what, name, text, want) in [
        (
            "absent: appended, compact stays compact without a newline",
            "10-n.conflist",
            list(&[other]),
            write("10-n.conflist", &list(&[other, OURS])),
        ),
        (
            "present and equal: unchanged",
            "10-n.conflist",
            list(&[other, OURS]),
            Edit::Unchanged,
        ),
        (
            "present, equal in another key order: unchanged",
            "10-n.conflist",
            list(&[other, reordered]),
            Edit::Unchanged,
        ),
        (
            "present but not last: left where it is",
            "10-n.conflist",
            list(&[OURS, other]),
            Edit::Unchanged,
        ),
        (
            "present but different: replaced in place",
            "10-n.conflist",
            list(&[changed, other]),
            write("10-n.conflist", &list(&[OURS, other])),
        ),
        (
            "present twice: the first replaced, the second out",
            "10-n.conflist",
            list(&[other, OURS, other, changed]),
            write("10-n.conflist", &list(&[other, OURS, other])),
        ),
        (
            "keys after plugins stay after it",
            "10-n.conflist",
            format!(r#"{{"plugins":[{other}],"name":"n","x":{{"b":1,"a":2}}}}"#),
            write(
                "10-n.conflist",
                &format!(r#"{{"plugins":[{other},{OURS}],"name":"n","x":{{"b":1,"a":2}}}}"#),
            ),
        ),
        (
            "a .conf that is a list: patched as a list, under its name",
            "10-n.conf",
            list(&[other]),
            write("10-n.conf", &list(&[other, OURS])),
        ),
        (
            "a single plugin in a .conf: a .conflist of it and ours",
            "10-n.conf",
            r#"{"cniVersion":"0.4.0","name":"n","type":"other","x":1}"#.into(),
            write(
                "10-n.conflist",
                &format!(
                    r#"{{"cniVersion":"0.4.0","name":"n","plugins":[{{"cniVersion":"0.4.0","name":"n","type":"other","x":1}},{OURS}]}}"#
                ),
            ),
        ),
        (
            "a single plugin in a .json, without cniVersion",
            "dir/20-n.json",
            r#"{"type":"other","name":"n"}"#.into(),
            write(
                "dir/20-n.conflist",
                &format!(r#"{{"name":"n","plugins":[{{"type":"other","name":"n"}},{OURS}]}}"#),
            ),
        ),
        (
            "a plugin of another type that starts like ours is not ours",
            "10-n.conflist",
            list(&[r#"{"type":"tandem-cni-old"}"#]),
            write(
                "10-n.conflist",
                &list(&[r#"{"type":"tandem-cni-old"}"#, OURS]),
            ),
        ),
        (
            "values are kept as written, numbers and escapes too",
            "10-n.conflist",
            r#"{"name":"n","x":1.0,"s":"\u00e9","plugins":[{"type":"other","n":1e3}]}"#.into(),
            write(
                "10-n.conflist",
                &format!(
                    r#"{{"name":"n","x":1.0,"s":"\u00e9","plugins":[{{"type":"other","n":1e3}},{OURS}]}}"#
                ),
            ),
        ),
        (
            "a key written twice: kept once, in its place, with the last value",
            "10-n.conflist",
            format!(r#"{{"name":"a","plugins":[{OURS}],"name":"n","plugins":[{other}]}}"#),
            write("10-n.conflist", &list(&[other, OURS])),
        ),
        (
            "plugins that are not objects are kept",
            "10-n.conflist",
            list(&[other, "1", "null"]),
            write("10-n.conflist", &list(&[other, "1", "null", OURS])),
        ),
    ] {
        assert_eq!(patch(Path::new(name), &text).unwrap(), want, "{what}");
    }
}

#[test]
fn the_files_indentation_and_final_newline_are_kept() {
    let four = "{\n    \"name\": \"n\",\n    \"plugins\": [\n        {\n            \"type\": \"other\"\n        }\n    ]\n}";
    let edit = patch(Path::new("a.conflist"), four).unwrap();
    let Edit::Write { text, .. } = &edit else {
        panic!("{edit:?}")
    };
    assert!(
        text.starts_with("{\n    \"name\": \"n\",\n    \"plugins\": [\n        {\n"),
        "{text}"
    );
    assert!(text.ends_with("\n    ]\n}"), "no newline added: {text:?}");
    assert_eq!(types(&edit), ["other", PLUGIN_TYPE]);

    let tabs = "{\n\t\"name\": \"n\",\n\t\"plugins\": [{\"type\": \"other\"}]\n}\n";
    let edit = patch(Path::new("a.conflist"), tabs).unwrap();
    let Edit::Write { text, .. } = &edit else {
        panic!("{edit:?}")
    };
    // The other plugin as written; ours in the file's tabs.
    assert!(
        text.starts_with(
            "{\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\"type\": \"other\"},\n\t\t{\n\t\t\t\"type\": \"tandem-cni\",\n"
        ),
        "{text:?}"
    );
    assert!(text.ends_with("}\n"), "{text:?}");

    // A single plugin moves two levels in, with the rest of the list.
    let single = r#"{
  "cniVersion": "0.4.0",
  "name": "n",
  "type": "bridge",
  "ipam": {
    "type": "host-local"
  }
}
"#;
    let converted = r#"{
  "cniVersion": "0.4.0",
  "name": "n",
  "plugins": [
    {
      "cniVersion": "0.4.0",
      "name": "n",
      "type": "bridge",
      "ipam": {
        "type": "host-local"
      }
    },
    {
      "type": "tandem-cni",
      "capabilities": {
        "io.kubernetes.cri.pod-annotations": true
      }
    }
  ]
}
"#;
    assert_eq!(
        patch(Path::new("10-n.conf"), single).unwrap(),
        write("10-n.conflist", converted)
    );
}

#[test]
fn unpatching_takes_out_only_our_entries() {
    let name = Path::new("10-east.conflist");
    // The patch undone: the same values, in the same order.
    let Edit::Write { text, file } = unpatch(name, BRIDGE_PATCHED).unwrap() else {
        panic!("our entry was there")
    };
    assert_eq!(file, name);
    assert_eq!(text, BRIDGE, "the file as it was");
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(BRIDGE).unwrap()
    );
    assert_eq!(
        types(&patch(name, &text).unwrap()),
        ["bridge", "portmap", PLUGIN_TYPE]
    );

    let other = r#"{"type":"other"}"#;
    let list = |plugins: &[&str]| format!(r#"{{"name":"n","plugins":[{}]}}"#, plugins.join(","));
    for (what, name, text, want) in [
        (
            "absent: unchanged",
            "10-n.conflist",
            list(&[other]),
            Edit::Unchanged,
        ),
        (
            "every copy out, whatever its settings",
            "10-n.conflist",
            list(&[OURS, other, r#"{"type":"tandem-cni"}"#]),
            write("10-n.conflist", &list(&[other])),
        ),
        (
            "a single plugin: unchanged",
            "10-n.conf",
            other.into(),
            Edit::Unchanged,
        ),
        (
            "a converted .conf stays a list",
            "10-n.conflist",
            format!(r#"{{"name":"n","plugins":[{other},{OURS}]}}"#),
            write("10-n.conflist", &list(&[other])),
        ),
    ] {
        assert_eq!(unpatch(Path::new(name), &text).unwrap(), want, "{what}");
    }
}

#[test]
fn a_bad_file_is_named_with_what_is_wrong() {
    let not_json = "10-n.conflist: not valid JSON";
    for (name, text, want) in [
        ("10-n.conflist", "", not_json),
        ("10-n.conflist", "{\"plugins\": [", not_json),
        ("10-n.conflist", "{} trailing", not_json),
        ("10-n.conflist", "[]", "10-n.conflist: not a JSON object"),
        (
            "10-n.conflist",
            r#"{"plugins": {"type": "bridge"}}"#,
            "10-n.conflist: `plugins` is not a list",
        ),
        (
            "10-n.conf",
            r#"{"plugins": "bridge"}"#,
            "10-n.conf: `plugins` is not a list",
        ),
        (
            "10-n.conflist",
            r#"{"name": "n", "type": "bridge"}"#,
            "10-n.conflist: a .conflist without `plugins`",
        ),
        (
            "/etc/cni/net.d/10-n.conf",
            r#"{"name": "n"}"#,
            "/etc/cni/net.d/10-n.conf: neither a plugin (no `type`) nor a list of plugins (no `plugins`)",
        ),
        (
            "10-n.json",
            r#"{"type": 1}"#,
            "10-n.json: neither a plugin (no `type`) nor a list of plugins (no `plugins`)",
        ),
    ] {
        let file = Path::new(name);
        for (op, got) in [
            ("patch", patch(file, text).map(|_| ())),
            ("unpatch", unpatch(file, text).map(|_| ())),
            ("has_entry", has_entry(file, text).map(|_| ())),
        ] {
            let err = got.expect_err(text).to_string();
            assert_eq!(err, want, "{op} of {text:?}");
        }
    }
    // The parser's own message comes as the source.
    let err = patch(Path::new("x.conflist"), "{").unwrap_err();
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert!(source.is_some_and(|s| s.contains("line 1")), "{err:?}");
}

#[test]
fn there_must_be_a_network_to_chain_after() {
    let want = "10-n.conflist: no plugin but tandem-cni: the cluster's network must come first";
    for text in [
        r#"{"name":"n","plugins":[]}"#.to_string(),
        format!(r#"{{"name":"n","plugins":[{OURS}]}}"#),
    ] {
        let err = patch(Path::new("10-n.conflist"), &text).unwrap_err();
        assert_eq!(err.to_string(), want, "{text}");
    }
    let err = patch(Path::new("10-n.conf"), OURS).unwrap_err();
    assert!(matches!(err, ConfigError::NothingToChain { .. }), "{err}");
    // Taking ours out of such a list is still fine.
    assert!(matches!(
        unpatch(
            Path::new("10-n.conflist"),
            &format!(r#"{{"plugins":[{OURS}]}}"#)
        ),
        Ok(Edit::Write { .. })
    ));
}

#[test]
fn has_entry_looks_for_our_type_in_the_chain() {
    for (name, text, want) in [
        ("a.conflist", BRIDGE_PATCHED.to_string(), true),
        ("a.conflist", BRIDGE.to_string(), false),
        (
            "a.conflist",
            r#"{"plugins":[{"type":"x"},{"type":"tandem-cni"}]}"#.into(),
            true,
        ),
        ("a.conf", r#"{"type":"bridge"}"#.into(), false),
        ("a.conf", OURS.into(), false),
    ] {
        assert_eq!(has_entry(Path::new(name), &text).unwrap(), want, "{text}");
    }
}

// === the manifest ===

fn find<'a>(objs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} rendered"))
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn the_daemonset_runs_the_installer_on_every_node() {
    let o = CniOptions {
        image: ImageOptions {
            image: None,
            registry: "registry.local".into(),
            tag: "1.2.3".into(),
        },
        bin_dir: "/var/lib/cni/bin".into(),
        net_dir: "/var/lib/cni/net.d".into(),
    };
    let objs = render(&o);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);

    let ns = find(&objs, "Namespace");
    assert_eq!(ns["metadata"]["name"], NAMESPACE);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for obj in &objs[1..] {
        assert_eq!(obj["metadata"]["namespace"], NAMESPACE, "{obj}");
        assert_eq!(obj["metadata"]["name"], NAME, "{obj}");
        assert_eq!(obj["metadata"]["labels"][crate::PART_OF], "tandem", "{obj}");
    }

    let ds = find(&objs, "DaemonSet");
    let template = &ds["spec"]["template"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&template["metadata"]["labels"][k], v, "selects its pods");
    }
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], NAME);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["tolerations"], json!([{ "operator": "Exists" }]));
    assert_eq!(spec["terminationGracePeriodSeconds"], 10);

    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], CONTAINER);
    assert_eq!(c["image"], "registry.local/tandem:1.2.3");
    assert_eq!(
        strings(&c["args"]),
        [
            "cni-install",
            "--bin-dir",
            "/host/cni-bin",
            "--net-dir",
            "/host/cni-net"
        ]
    );
    assert_eq!(
        strings(&c["readinessProbe"]["exec"]["command"]),
        [
            "/tandem",
            "cni-install",
            "--check",
            "--bin-dir",
            "/host/cni-bin",
            "--net-dir",
            "/host/cni-net"
        ]
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 1);
    assert_eq!(c["securityContext"]["runAsUser"], 0);
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // Each mount is a host dir of the options, at the path the args give.
    let volumes = spec["volumes"].as_array().unwrap();
    for (mount, host) in [
        (MOUNTED_BIN_DIR, "/var/lib/cni/bin"),
        (MOUNTED_NET_DIR, "/var/lib/cni/net.d"),
    ] {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount)
            .unwrap_or_else(|| panic!("{mount} mounted"));
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        assert_eq!(
            v["hostPath"],
            json!({ "path": host, "type": "DirectoryOrCreate" })
        );
    }
}

#[test]
fn the_defaults_are_linkerds_dirs() {
    let objs = render(&CniOptions::default());
    let volumes = &find(&objs, "DaemonSet")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["hostPath"]["path"], "/opt/cni/bin");
    assert_eq!(volumes[1]["hostPath"]["path"], "/etc/cni/net.d");
    let yaml = manifest_yaml().unwrap();
    assert!(yaml.starts_with("# Generated by"), "{yaml}");
    assert_eq!(yaml.matches("\n---\n").count(), 3, "{yaml}");
}
