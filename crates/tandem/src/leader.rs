//! The leader-election flags that the failover controller and the service
//! mirror share (each has its own `--lease-namespace`, whose default
//! differs).

use clap::Args;
use tandem_api::Duration as GoDuration;
use tandem_lease::LeaseParams;

#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// This replica's name in the Lease and in events. Default: the pod name, else host and pid.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Run as the only writer, without a Lease (one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// How long a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s")]
    pub lease_duration: GoDuration,
    /// How often the leader renews the Lease.
    #[arg(long, default_value = "2s")]
    pub renew_period: GoDuration,
}

impl LeaderArgs {
    /// The identity given, else this host's name and process id.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "local".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The Lease `namespace/name` to hold, or `None` with
    /// `--no-leader-election`.
    pub fn params(&self, namespace: &str, name: &str, field_manager: &str) -> Option<LeaseParams> {
        (!self.no_leader_election).then(|| LeaseParams {
            lease_duration: self.lease_duration.into(),
            renew_period: self.renew_period.into(),
            field_manager: field_manager.into(),
            ..LeaseParams::new(namespace, name, self.identity())
        })
    }
}

/// Says how to go on when leader election cannot work. `who` is the
/// component, `install` the command whose output holds its Lease rights.
/// A missing Lease namespace is what running from a workstation looks like
/// before the component is installed; a forbidden Lease, a new image with
/// the role of an older release.
pub fn with_hint(e: anyhow::Error, who: &str, install: &str) -> anyhow::Error {
    match e.downcast_ref::<tandem_lease::Error>() {
        Some(missing @ tandem_lease::Error::NamespaceNotFound { .. }) => anyhow::anyhow!(
            "{missing}, so there is no leader election to join: install {who} (`{install} | kubectl apply -f -`), pass --lease-namespace with an existing namespace, or pass --no-leader-election to run as the only writer"
        ),
        Some(forbidden @ tandem_lease::Error::Forbidden { .. }) => anyhow::anyhow!(
            "{forbidden}; so {who} cannot take part in leader election: its role lacks the Lease rights of this release (apply `{install} | kubectl apply -f -` again), or pass --no-leader-election to run as the only writer"
        ),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        leader: LeaderArgs,
    }

    #[test]
    fn the_flags_make_the_lease_params() {
        let cli = Cli::try_parse_from([
            "x",
            "--identity",
            "pod-a",
            "--lease-duration",
            "9s",
            "--renew-period",
            "1s",
        ])
        .unwrap();
        let p = cli.leader.params("ns", "lease", "mgr").unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.identity.as_str()),
            ("ns", "lease", "pod-a")
        );
        assert_eq!(p.lease_duration, std::time::Duration::from_secs(9));
        assert_eq!(p.renew_period, std::time::Duration::from_secs(1));
        assert_eq!(p.field_manager, "mgr");
        assert_eq!(p.owner, None);

        let alone = Cli::try_parse_from(["x", "--no-leader-election"]).unwrap();
        assert_eq!(alone.leader.params("ns", "lease", "mgr"), None);
        let err = Cli::try_parse_from(["x", "--lease-duration", "15"]).unwrap_err();
        assert!(err.to_string().contains("a number has no unit"), "{err}");
    }

    #[test]
    fn a_failed_election_gets_a_hint() {
        let missing = anyhow::Error::new(tandem_lease::Error::NamespaceNotFound {
            namespace: "tandem-failover".into(),
            lease: "tandem-failover/tandem-failover".into(),
        })
        .context("leader election cannot work");
        let msg = format!(
            "{:#}",
            with_hint(
                missing,
                "the failover controller",
                "tandem failover install"
            )
        );
        for hint in [
            "namespace tandem-failover",
            "install the failover controller (`tandem failover install | kubectl apply -f -`)",
            "--lease-namespace",
            "--no-leader-election",
        ] {
            assert!(msg.contains(hint), "{msg}");
        }
        let forbidden = anyhow::Error::new(tandem_lease::Error::Forbidden {
            op: "get",
            lease: "mc/service-mirror-write-west".into(),
            message: "cannot get resource \"leases\"".into(),
        })
        .context("leader election cannot work");
        let msg = format!(
            "{:#}",
            with_hint(forbidden, "the service mirror", "tandem multicluster link")
        );
        for hint in [
            "get of Lease mc/service-mirror-write-west is forbidden: cannot get resource \"leases\"",
            "apply `tandem multicluster link | kubectl apply -f -` again",
            "--no-leader-election",
        ] {
            assert!(msg.contains(hint), "{msg}");
        }
        let other = with_hint(anyhow::anyhow!("boom"), "x", "y");
        assert_eq!(format!("{other:#}"), "boom");
    }

    #[test]
    fn without_a_pod_name_the_identity_is_the_host_and_pid() {
        // Built directly, so that a POD_NAME in the test's environment
        // cannot stand in for the fallback.
        let args = LeaderArgs {
            identity: None,
            no_leader_election: false,
            lease_duration: "15s".parse().unwrap(),
            renew_period: "2s".parse().unwrap(),
        };
        let id = args.identity();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(id.len() > format!("-{}", std::process::id()).len(), "{id}");
    }
}
