//! A namespace of one test: created fresh, dumped on failure, always
//! deleted.

use crate::{Env, kubectl::kubectl_apply, run, run_ok};

/// A namespace of one test, in one or more clusters.
pub struct TestNamespace {
    pub name: String,
    pub clusters: Vec<String>,
    pub(crate) env: Env,
}

impl TestNamespace {
    /// `kubectl apply -f -` of a manifest into this namespace.
    pub fn apply(&self, cluster: &str, manifest: &str) {
        let mut cmd = self.env.kubectl(cluster);
        cmd.args(["-n", &self.name]);
        kubectl_apply(cmd, manifest, &format!("{cluster}/{}", self.name));
    }

    /// `kubectl -n NS ...` in one cluster; must succeed.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        run_ok(
            self.env
                .kubectl(cluster)
                .arg("-n")
                .arg(&self.name)
                .args(args),
        )
    }

    /// The addresses of `svc`'s ready endpoints in `cluster`. Read as JSON:
    /// a slice with no endpoints has none at all, which kubectl's jsonpath
    /// filters refuse.
    pub fn ready_addresses(&self, cluster: &str, svc: &str) -> Vec<String> {
        let out = self.kubectl(
            cluster,
            &[
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={svc}"),
                "-o",
                "json",
            ],
        );
        let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl prints JSON");
        let mut addrs = vec![];
        for slice in list["items"].as_array().into_iter().flatten() {
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                if ep["conditions"]["ready"] == true
                    && let Some(a) = ep["addresses"][0].as_str()
                {
                    addrs.push(a.to_string());
                }
            }
        }
        addrs
    }

    fn dump(&self) {
        for c in &self.clusters {
            self.env.dump_nodes(c);
            let out = run(self.env.kubectl(c).args([
                "get",
                "all,endpointslices,events,configmaps,serviceaccounts",
                "-n",
                &self.name,
                "-o",
                "yaml",
            ]));
            eprintln!(
                "===== objects of namespace {} in cluster {c} =====\n{}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for c in &self.clusters {
            let _ = run(self.env.kubectl(c).args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ]));
        }
    }
}
