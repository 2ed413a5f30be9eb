//! The first half of the workshop, as its commands are written, on a private
//! two-cluster testbed (it deletes a CRD, so it does not share clusters):
//! certificates, `check --pre`, install, check, smi; then faults that `check`
//! must catch. Also: server-side apply and idempotency of every manifest, and
//! the SMI CRD over linkerd-smi's.

use std::path::Path;

use serde_json::Value;
use tandem_harness::{PrivateTestbed, cli::Cli, workshop_certificates};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// A TrafficSplit CRD shaped as linkerd-smi installs it (written from its
/// documented shape: v1alpha1 stored with quantity weights, v1alpha2 served).
const LINKERD_SMI_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: trafficsplits.split.smi-spec.io
  labels:
    linkerd.io/extension: smi
spec:
  group: split.smi-spec.io
  scope: Namespaced
  conversion:
    strategy: None
  names:
    kind: TrafficSplit
    listKind: TrafficSplitList
    shortNames: [ts]
    plural: trafficsplits
    singular: trafficsplit
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [service, backends]
            properties:
              service: {type: string}
              backends:
                type: array
                items:
                  type: object
                  required: [service, weight]
                  properties:
                    service: {type: string}
                    weight: {x-kubernetes-int-or-string: true}
    additionalPrinterColumns:
    - name: Service
      type: string
      jsonPath: .spec.service
  - name: v1alpha2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [service, backends]
            properties:
              service: {type: string}
              backends:
                type: array
                items:
                  type: object
                  required: [service, weight]
                  properties:
                    service: {type: string}
                    weight: {type: integer}
"#;

const SPLITS: &str = r#"
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: old-style, namespace: default}
spec:
  service: web
  backends:
  - {service: web-v1, weight: 500m}
  - {service: web-v2, weight: 500m}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: new-style, namespace: default}
spec:
  service: web
  backends:
  - {service: web-v1, weight: 1}
  - {service: web-v2, weight: 0}
"#;

/// The identity flags of `tandem install` for `cluster`'s workshop issuer.
fn identity_flags(cluster: &str) -> [String; 6] {
    [
        "--identity-trust-anchors-file".into(),
        "root.crt".into(),
        "--identity-issuer-certificate-file".into(),
        format!("{cluster}-issuer.crt"),
        "--identity-issuer-key-file".into(),
        format!("{cluster}-issuer.key"),
    ]
}

#[test]
fn the_workshop_install_path_works_and_check_catches_real_faults() {
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 24440);
    let dir = tempfile::tempdir().unwrap();
    let w = Cli::new(tandem_bin(), dir.path(), &tb.env.kubeconfig);

    linkerd_smi_first(&w);
    // The workshop's certificate commands, verbatim.
    workshop_certificates(tandem_bin(), &w.dir, &["east", "west"]);
    install_east_and_check(&w);
    check_catches_faults_on_east(&w);
    server_side_apply_on_west_twice(&w);
}

// === steps ===

/// linkerd-smi was there first, with splits of both versions.
fn linkerd_smi_first(w: &Cli) {
    w.kubectl(
        &["--context", "east", "apply", "-f", "-"],
        Some(LINKERD_SMI_CRD),
    );
    w.kubectl(
        &[
            "--context",
            "east",
            "wait",
            "--for=condition=Established",
            "crd/trafficsplits.split.smi-spec.io",
        ],
        None,
    );
    w.kubectl(&["--context", "east", "apply", "-f", "-"], Some(SPLITS));
}

/// `check --pre`, install, check, smi; linkerd-smi's splits survive; a second
/// apply changes nothing; `check --pre` then fails.
fn install_east_and_check(w: &Cli) {
    let (ok, out) = w.outcome(&["check", "--pre", "--context", "east"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("pre-install") && out.contains("√ can create CustomResourceDefinitions"),
        "{out}"
    );

    w.pipe(
        &["install", "--crds", "--context", "east"],
        &["apply", "--context", "east"],
    );
    let identity = identity_flags("east");
    let mut install = vec!["install", "--context", "east"];
    install.extend(identity.iter().map(String::as_str));
    w.pipe(&install, &["apply", "--context", "east"]);

    let (ok, out) = w.outcome(&["--context", "east", "check"]);
    assert!(ok, "{out}");
    for line in [
        "√ 'tandem' namespace exists",
        "√ CRDs are installed",
        "√ control plane Deployments are available",
        "√ issuer cert is signed by a trust anchor",
        "Status check results are √",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    let json: Value =
        serde_json::from_str(&w.tandem_ok(&["--context", "east", "check", "-o", "json"])).unwrap();
    assert_eq!(json["success"], true, "{json}");

    w.pipe(
        &["smi", "--context=east", "install"],
        &["--context=east", "apply"],
    );

    // linkerd-smi's splits survive our CRD and read under both versions.
    let weight = |version: &str, name: &str| {
        w.kubectl(
            &[
                "--context",
                "east",
                "get",
                &format!("trafficsplits.{version}.split.smi-spec.io"),
                name,
                "-o",
                "jsonpath={.spec.backends[0].weight}",
            ],
            None,
        )
    };
    assert_eq!(weight("v1alpha1", "old-style"), "500m");
    assert_eq!(weight("v1alpha2", "new-style"), "1");
    w.kubectl(&["--context", "east", "get", "ts"], None);

    // Applying the same manifests again changes nothing.
    for args in [
        &["install", "--crds"][..],
        &install[..],
        &["smi", "install"][..],
    ] {
        let out = w.pipe(args, &["apply", "--context", "east"]);
        for line in out.lines() {
            assert!(
                line.ends_with(" unchanged"),
                "second apply of {args:?} changed: {line}"
            );
        }
    }

    let (ok, out) = w.outcome(&["check", "--pre", "--context", "east"]);
    assert!(!ok, "pre-install fails once installed:\n{out}");
    assert!(
        out.contains("× control plane namespace 'tandem' does not already exist"),
        "{out}"
    );
}

/// `tandem check --wait 0s` on east after each fault.
fn check_east(w: &Cli) -> (bool, String) {
    w.outcome(&["--context", "east", "check", "--wait", "0s"])
}

fn check_catches_faults_on_east(w: &Cli) {
    // Fault: an issuer from another root.
    w.cert(&[
        "other-root",
        "other.crt",
        "other.key",
        "--profile",
        "root-ca",
    ]);
    w.cert_signed(
        "other",
        &[
            "identity.linkerd.cluster.local",
            "stray.crt",
            "stray.key",
            "--profile",
            "intermediate-ca",
        ],
    );
    w.set_issuer("east", "stray.crt", "stray.key");
    let (ok, out) = check_east(w);
    assert!(!ok, "{out}");
    assert!(
        out.contains("× issuer cert is signed by a trust anchor"),
        "{out}"
    );

    // Fault: an issuer that expires in 30 days is a warning, not a failure.
    w.cert_signed(
        "root",
        &[
            "identity.linkerd.cluster.local",
            "short.crt",
            "short.key",
            "--profile",
            "intermediate-ca",
            "--not-after",
            "720h",
        ],
    );
    w.set_issuer("east", "short.crt", "short.key");
    let (ok, out) = check_east(w);
    assert!(ok, "a warning does not fail check:\n{out}");
    assert!(
        out.contains("‼ issuer cert is within its validity period"),
        "{out}"
    );

    // Fault: the failover controller scaled to 0.
    w.pipe(
        &["failover", "install", "--context", "east"],
        &["apply", "--context", "east"],
    );
    let (ok, out) = w.outcome(&["--context", "east", "check"]);
    assert!(
        ok && out.contains("√ the failover controller is running"),
        "{out}"
    );
    w.kubectl(
        &[
            "--context",
            "east",
            "-n",
            "tandem-failover",
            "scale",
            "deploy/tandem-failover",
            "--replicas=0",
        ],
        None,
    );
    let (ok, out) = check_east(w);
    assert!(!ok, "{out}");
    assert!(
        out.contains("× the failover controller is running") && out.contains("scaled to 0"),
        "{out}"
    );

    // Fault: a deleted CRD.
    w.kubectl(
        &[
            "--context",
            "east",
            "delete",
            "crd",
            "trafficsplits.split.smi-spec.io",
        ],
        None,
    );
    let (ok, out) = check_east(w);
    assert!(!ok, "{out}");
    assert!(
        out.contains("× CRDs are installed")
            && out.contains("trafficsplits.split.smi-spec.io is missing"),
        "{out}"
    );
}

/// West: every manifest with server-side apply (real validation), twice;
/// the second apply changes no object.
fn server_side_apply_on_west_twice(w: &Cli) {
    let identity = identity_flags("west");
    let mut west_install = vec!["install"];
    west_install.extend(identity.iter().map(String::as_str));
    let manifests: [&[&str]; 4] = [
        &["install", "--crds"],
        &west_install,
        &["smi", "install"],
        &["failover", "install"],
    ];
    let ssa = [
        "--context",
        "west",
        "apply",
        "--server-side",
        "--field-manager",
        "tandem-test",
    ];
    for args in manifests {
        w.pipe(args, &ssa);
    }
    let versions = || -> Vec<String> {
        manifests
            .iter()
            .map(|args| {
                let manifest = w.tandem_ok(args);
                w.kubectl(&["--context", "west", "get", "-f", "-", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}"], Some(&manifest))
            })
            .collect()
    };
    let before = versions();
    for args in manifests {
        w.pipe(args, &ssa);
    }
    assert_eq!(
        before,
        versions(),
        "a second server-side apply changed objects"
    );
}
