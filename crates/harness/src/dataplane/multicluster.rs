//! The cross-cluster fixture: tandem's control plane, SMI and multicluster
//! (the gateway) in several real clusters under one trust root, as the
//! workshop installs them, and links between them.

use super::{
    CONTROL_PLANE_NS, DESTINATION, IDENTITY, dump_control_plane, install_with, restart, rollout,
};
use crate::{Env, run, run_ok, workshop_certificates};

/// The namespace of the gateway and the service mirrors.
pub const MULTICLUSTER_NS: &str = "tandem-multicluster";
const GATEWAY: &str = "tandem-gateway";

/// The mesh identity of a cluster's gateway, as `tandem multicluster
/// install` names it by default.
pub fn gateway_identity() -> String {
    format!("{GATEWAY}.{MULTICLUSTER_NS}.serviceaccount.identity.{CONTROL_PLANE_NS}.cluster.local")
}

/// Clusters meshed together: each one's control plane and gateway run and
/// trust one root.
pub struct Multicluster<'a> {
    env: &'a Env,
}

impl<'a> Multicluster<'a> {
    /// Installs tandem (CRDs, SMI, control plane, multicluster) in each of
    /// `clusters` with certificates from one fresh trust root, restarts what
    /// reads the anchors only at start (identity, destination, the gateway),
    /// and waits until all of it is ready. On failure, the control plane's
    /// pods and logs are printed.
    pub fn install(env: &'a Env, clusters: &[&str]) -> Self {
        let certs = tempfile::tempdir().expect("a temporary directory");
        workshop_certificates(&env.tandem, certs.path(), clusters);
        let mesh = Multicluster { env };
        for c in clusters {
            mesh.install_one(c, certs.path());
        }
        for c in clusters {
            mesh.wait_ready(c);
        }
        mesh
    }

    /// Reinstalls `cluster` on a trust root of its own (as a user who made
    /// new certificates for it alone), and waits until its control plane and
    /// gateway run with it. Its workloads keep their old certificates until
    /// they restart.
    pub fn reroot(&self, cluster: &str) {
        let certs = tempfile::tempdir().expect("a temporary directory");
        workshop_certificates(&self.env.tandem, certs.path(), &[cluster]);
        self.install_one(cluster, certs.path());
        self.wait_ready(cluster);
    }

    fn install_one(&self, cluster: &str, certs: &std::path::Path) {
        install_with(self.env, cluster, certs);
        self.env
            .apply_tandem(cluster, &["multicluster", "install", "--context", cluster]);
        // The gateway reads the anchors once, when it starts.
        restart(self.env, cluster, MULTICLUSTER_NS, GATEWAY);
    }

    fn wait_ready(&self, cluster: &str) {
        for (ns, deploy) in [
            (CONTROL_PLANE_NS, IDENTITY),
            (CONTROL_PLANE_NS, DESTINATION),
            (MULTICLUSTER_NS, GATEWAY),
        ] {
            if let Err(e) = rollout(self.env, cluster, ns, deploy) {
                dump_control_plane(self.env, cluster);
                let logs = run(self.env.kubectl(cluster).args([
                    "-n",
                    MULTICLUSTER_NS,
                    "logs",
                    &format!("deploy/{GATEWAY}"),
                    "--tail=50",
                ]));
                panic!(
                    "{ns}/{deploy} in {cluster} is not ready: {e}\ngateway logs:\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
        }
    }

    /// Links `target` into `from` as the workshop types it (`tandem
    /// multicluster --context=TARGET link --cluster-name=TARGET | kubectl
    /// --context=FROM apply -f -`), and waits for `from`'s service mirror.
    pub fn link(&self, target: &str, from: &str) {
        self.env.apply_tandem(
            from,
            &[
                "multicluster",
                &format!("--context={target}"),
                "link",
                &format!("--cluster-name={target}"),
            ],
        );
        let mirror = format!("tandem-service-mirror-{target}");
        // A mirror left from an earlier link holds the old credentials.
        restart(self.env, from, MULTICLUSTER_NS, &mirror);
        if let Err(e) = rollout(self.env, from, MULTICLUSTER_NS, &mirror) {
            panic!("the service mirror of {target} in {from} is not ready: {e}");
        }
    }

    /// The address the testbed gave `cluster`'s gateway Service.
    pub fn gateway_address(&self, cluster: &str) -> String {
        let ip = run_ok(self.env.kubectl(cluster).args([
            "-n",
            MULTICLUSTER_NS,
            "get",
            "svc",
            GATEWAY,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]));
        assert!(
            !ip.trim().is_empty(),
            "the gateway of {cluster} has no LoadBalancer address"
        );
        ip.trim().to_string()
    }
}
