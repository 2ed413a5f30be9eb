//! The first half of the workshop, as its commands are written, on a private
//! two-cluster testbed (it deletes a CRD, so it does not share clusters):
//! certificates, `check --pre`, install, check, smi; then faults that `check`
//! must catch. Also: server-side apply and idempotency of every manifest, the
//! SMI CRD over linkerd-smi's, and the Helm chart against the CLI.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;
use tandem_harness::{PrivateTestbed, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Runs `tandem ARGS` in `dir` with the testbed's kubeconfig; must succeed.
struct Workshop {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Workshop {
    fn tandem(&self, args: &[&str]) -> Output {
        run(Command::new(tandem_bin())
            .args(args)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig))
    }

    fn tandem_ok(&self, args: &[&str]) -> String {
        let out = self.tandem(args);
        assert!(
            out.status.success(),
            "tandem {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tandem ARGS | kubectl KUBECTL_ARGS -f -`, as the workshop types it.
    fn pipe(&self, args: &[&str], kubectl_args: &[&str]) -> String {
        let manifest = self.tandem_ok(args);
        let mut k = kubectl_args.to_vec();
        k.extend(["-f", "-"]);
        self.kubectl(&k, Some(&manifest))
    }

    /// `tandem check` with its output and whether it passed.
    fn check(&self, args: &[&str]) -> (bool, String) {
        let out = self.tandem(args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Puts an issuer into the cluster's Secret, as an operator might by mistake.
    fn set_issuer(&self, ctx: &str, crt: &str, key: &str) {
        let b64 = |f: &str| {
            let bytes = std::fs::read(self.dir.path().join(f)).unwrap();
            base64_encode(&bytes)
        };
        let patch = serde_json::json!({"data": {"crt.pem": b64(crt), "key.pem": b64(key)}});
        self.kubectl(
            &[
                "--context",
                ctx,
                "-n",
                "tandem",
                "patch",
                "secret",
                "tandem-identity-issuer",
                "--type",
                "merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        );
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    // coreutils base64, so that the test uses nothing of tandem's.
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64 runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
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

#[test]
fn the_workshop_install_path_works_and_check_catches_real_faults() {
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 24440);
    let w = Workshop {
        dir: tempfile::tempdir().unwrap(),
        kubeconfig: tb.env.kubeconfig.clone(),
    };

    // linkerd-smi was there first, with splits of both versions.
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

    // The workshop's certificate commands, verbatim.
    tandem_harness::workshop_certificates(tandem_bin(), w.dir.path(), &["east", "west"]);
    let (ok, out) = w.check(&["check", "--pre", "--context", "east"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("pre-install") && out.contains("√ can create CustomResourceDefinitions"),
        "{out}"
    );

    w.pipe(
        &["install", "--crds", "--context", "east"],
        &["apply", "--context", "east"],
    );
    let identity = [
        "--identity-trust-anchors-file",
        "root.crt",
        "--identity-issuer-certificate-file",
        "east-issuer.crt",
        "--identity-issuer-key-file",
        "east-issuer.key",
    ];
    let mut install = vec!["install", "--context", "east"];
    install.extend(identity);
    w.pipe(&install, &["apply", "--context", "east"]);

    let (ok, out) = w.check(&["--context", "east", "check"]);
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
    let v1 = w.kubectl(
        &[
            "--context",
            "east",
            "get",
            "trafficsplits.v1alpha1.split.smi-spec.io",
            "old-style",
            "-o",
            "jsonpath={.spec.backends[0].weight}",
        ],
        None,
    );
    assert_eq!(v1, "500m");
    let v2 = w.kubectl(
        &[
            "--context",
            "east",
            "get",
            "trafficsplits.v1alpha2.split.smi-spec.io",
            "new-style",
            "-o",
            "jsonpath={.spec.backends[0].weight}",
        ],
        None,
    );
    assert_eq!(v2, "1");
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

    let (ok, out) = w.check(&["check", "--pre", "--context", "east"]);
    assert!(!ok, "pre-install fails once installed:\n{out}");
    assert!(
        out.contains("× control plane namespace 'tandem' does not already exist"),
        "{out}"
    );

    // Fault: an issuer from another root.
    w.tandem_ok(&[
        "certificate",
        "create",
        "other-root",
        "other.crt",
        "other.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ]);
    w.tandem_ok(&[
        "certificate",
        "create",
        "identity.linkerd.cluster.local",
        "stray.crt",
        "stray.key",
        "--profile",
        "intermediate-ca",
        "--ca",
        "other.crt",
        "--ca-key",
        "other.key",
        "--no-password",
        "--insecure",
    ]);
    w.set_issuer("east", "stray.crt", "stray.key");
    let (ok, out) = w.check(&["--context", "east", "check", "--wait", "0s"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("× issuer cert is signed by a trust anchor"),
        "{out}"
    );

    // Fault: an issuer that expires in 30 days is a warning, not a failure.
    w.tandem_ok(&[
        "certificate",
        "create",
        "identity.linkerd.cluster.local",
        "short.crt",
        "short.key",
        "--profile",
        "intermediate-ca",
        "--ca",
        "root.crt",
        "--ca-key",
        "root.key",
        "--not-after",
        "720h",
        "--no-password",
        "--insecure",
    ]);
    w.set_issuer("east", "short.crt", "short.key");
    let (ok, out) = w.check(&["--context", "east", "check", "--wait", "0s"]);
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
    let (ok, out) = w.check(&["--context", "east", "check"]);
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
    let (ok, out) = w.check(&["--context", "east", "check", "--wait", "0s"]);
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
    let (ok, out) = w.check(&["--context", "east", "check", "--wait", "0s"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("× CRDs are installed")
            && out.contains("trafficsplits.split.smi-spec.io is missing"),
        "{out}"
    );

    // West: every manifest with server-side apply (real validation), twice;
    // the second apply changes no object.
    let mut west_install = vec!["install"];
    west_install.extend([
        "--identity-trust-anchors-file",
        "root.crt",
        "--identity-issuer-certificate-file",
        "west-issuer.crt",
        "--identity-issuer-key-file",
        "west-issuer.key",
    ]);
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
    let versions = |w: &Workshop| -> Vec<String> {
        manifests
            .iter()
            .map(|args| {
                let manifest = w.tandem_ok(args);
                w.kubectl(&["--context", "west", "get", "-f", "-", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}"], Some(&manifest))
            })
            .collect()
    };
    let before = versions(&w);
    for args in manifests {
        w.pipe(args, &ssa);
    }
    assert_eq!(
        before,
        versions(&w),
        "a second server-side apply changed objects"
    );
}

#[test]
fn install_refuses_bad_identity_inputs_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = |args: &[&str]| {
        run(Command::new(tandem_bin())
            .args(args)
            .current_dir(dir.path()))
    };
    let ok = |args: &[&str]| {
        let out = t(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "certificate",
        "create",
        "root",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ]);
    ok(&[
        "certificate",
        "create",
        "issuer",
        "issuer.crt",
        "issuer.key",
        "--profile",
        "intermediate-ca",
        "--ca",
        "root.crt",
        "--ca-key",
        "root.key",
        "--no-password",
        "--insecure",
    ]);
    ok(&[
        "certificate",
        "create",
        "other",
        "other.crt",
        "other.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ]);
    ok(&[
        "certificate",
        "create",
        "leaf.example",
        "leaf.crt",
        "leaf.key",
        "--profile",
        "leaf",
        "--ca",
        "issuer.crt",
        "--ca-key",
        "issuer.key",
        "--no-password",
        "--insecure",
    ]);

    for (anchors, cert, key, want) in [
        ("other.crt", "issuer.crt", "issuer.key", "anchor"),
        ("root.crt", "issuer.crt", "other.key", "key"),
        ("root.crt", "leaf.crt", "leaf.key", "CA"),
        ("missing.crt", "issuer.crt", "issuer.key", "missing.crt"),
        ("root.key", "issuer.crt", "issuer.key", "PEM"),
    ] {
        let out = t(&[
            "install",
            "--identity-trust-anchors-file",
            anchors,
            "--identity-issuer-certificate-file",
            cert,
            "--identity-issuer-key-file",
            key,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{anchors} {cert} {key}");
        assert!(
            out.stdout.is_empty(),
            "nothing is printed on stdout: {anchors} {cert} {key}"
        );
        assert!(err.contains(want), "{anchors} {cert} {key}: {err}");
    }
    // Only some of the three flags.
    let out = t(&["install", "--identity-trust-anchors-file", "root.crt"]);
    assert!(!out.status.success() && out.stdout.is_empty());

    // None of them: a trial identity, with a warning.
    let out = t(&["install"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("for trials"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tandem-identity-issuer"));
}

/// The objects of a YAML stream, as JSON values.
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML parses");
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    docs.sort_by_key(|d| d.to_string());
    docs
}

#[test]
fn the_helm_chart_renders_what_the_cli_prints() {
    let bin_dir = run_ok(Command::new(tandem_bin()).args(["testbed", "build"]));
    let helm = PathBuf::from(bin_dir.trim()).join("helm");
    assert!(
        helm.is_file(),
        "helm was built from its Go module into {}",
        helm.display()
    );
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/tandem-failover");

    for (sets, cli) in [
        (vec![], vec![]),
        (
            vec![
                "replicas=3",
                "namespace=ops",
                "image=registry.local/tandem:dev",
                "selector=team/failover",
                "logLevel=debug",
            ],
            vec![
                "--replicas",
                "3",
                "--namespace",
                "ops",
                "--image",
                "registry.local/tandem:dev",
                "--selector",
                "team/failover",
                "--log-level",
                "debug",
            ],
        ),
        (
            vec!["registry=mirror.local/x", "tag=1.2.3"],
            vec!["--registry", "mirror.local/x", "--tag", "1.2.3"],
        ),
    ] {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "tandem-failover"]).arg(&chart);
        for s in &sets {
            cmd.args(["--set", s]);
        }
        let from_helm = run_ok(&mut cmd);
        let mut args = vec!["failover", "install"];
        args.extend(&cli);
        let from_cli = run_ok(Command::new(tandem_bin()).args(&args));
        assert_eq!(
            objects(&from_helm),
            objects(&from_cli),
            "helm --set {sets:?} vs tandem {cli:?}"
        );
    }
}
