//! `tandem check` as a user with too little access: a failure to look for
//! the installed extensions shows as a failed check, and never hides the
//! extensions' checks silently.

use std::{path::Path, process::Command};

use tandem_harness::{Env, run};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

#[tokio::test]
async fn a_user_who_cannot_list_namespaces_sees_why_the_extension_checks_did_not_run() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("check-rbac", &["east"]);
    // A ServiceAccount that may read what the core checks read, but may not
    // list namespaces.
    ns.apply(
        "east",
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: viewer
"#,
    );
    let role = format!("check-rbac-viewer-{}", ns.name);
    env.apply(
        "east",
        &format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {role}
rules:
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {role}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects:
- {{kind: ServiceAccount, name: viewer, namespace: {ns}}}
"#,
            ns = ns.name
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("viewer.kubeconfig");
    env.service_account_kubeconfig("east", &ns.name, "viewer", &kubeconfig);

    let out = run(Command::new(tandem_bin())
        .args(["check", "-o", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--context", "east"]));
    let _ = run(env
        .kubectl("east")
        .args(["delete", "clusterrole,clusterrolebinding", &role]));
    assert!(!out.status.success(), "check must fail");
    let report = tandem_harness::check::report(&out);
    for extension in ["failover", "multicluster"] {
        let category = tandem_harness::check::category(&report, &format!("tandem-{extension}"));
        let check = &category[0];
        assert_eq!(check.result, "error", "{category:#?}");
        assert!(check.error.contains("forbidden"), "{category:#?}");
        assert!(check.hint.contains("list namespaces"), "{category:#?}");
    }
}
