//! `tandem demo`: the whole workshop, end to end, on a local testbed with
//! real nodes: each step prints the command a user would type and its
//! result, everything tandem installs runs as pods, the meshed emojivoto app
//! makes traffic, and the failover and failback are checked and timed, with
//! vote-bot's failed requests counted (there must be none).

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Args;

mod commands;
mod failover;
mod measure;
mod milestones;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Wait for Enter between steps, for presenting.
    #[arg(long)]
    pause: bool,
    /// Leave the clusters running, and print how to explore them.
    #[arg(long, conflicts_with = "down")]
    keep: bool,
    /// Stop and remove what `tandem demo --keep` left.
    #[arg(long)]
    down: bool,
    /// Where the demo keeps its testbed, certificates and logs.
    #[arg(long, env = "TANDEM_DEMO_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
    /// The first port of the demo's testbed (east takes 10 ports from here, west the next 10).
    #[arg(long, default_value_t = 26640)]
    base_port: u16,
    /// vote-bot's votes a second (each after a list: twice as many requests
    /// reach web).
    #[arg(long, default_value_t = 20.0, value_parser = positive)]
    rate: f64,
    /// How many times to fail over and back (a benchmark: p50/p99/max).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    failovers: u32,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// CNI mode: install the control plane with `--linkerd-cni-enabled` and
    /// the tandem-cni plugin (`tandem install-cni`), so that the app's pods
    /// start without an init container.
    #[arg(long)]
    cni: bool,
    /// Install the control plane with `--native-sidecar`, so that the app's
    /// proxies are native sidecars (init containers that keep running).
    #[arg(long)]
    native_sidecar: bool,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1000.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 1000 per second")),
    }
}

fn default_dir() -> PathBuf {
    tandem_testbed::default_dir()
        .parent()
        .map(|p| p.join("demo"))
        .unwrap_or_else(|| PathBuf::from("tandem-demo"))
}

const CLUSTERS: [&str; 2] = ["east", "west"];

/// The demo's directory layout and the commands it runs.
struct Demo {
    dir: PathBuf,
    tandem: PathBuf,
    base_port: u16,
    pause: bool,
    step: usize,
    cni: bool,
    native_sidecar: bool,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let tandem = std::env::current_exe().context("finding the tandem binary")?;
    let demo = Demo {
        dir: args.dir.clone(),
        tandem,
        base_port: args.base_port,
        pause: args.pause && std::io::stdin().is_terminal(),
        step: 0,
        cni: args.cni,
        native_sidecar: args.native_sidecar,
    };
    if args.down {
        demo.teardown()?;
        println!("the demo in {} is stopped and removed", demo.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    if demo.dir.join("demo.json").exists() {
        bail!(
            "a demo is already up in {} (left by `tandem demo --keep`, or running now).\n  Stop it with `tandem demo --down`, or use another --dir",
            demo.dir.display()
        );
    }
    std::fs::create_dir_all(&demo.dir)
        .with_context(|| format!("creating {}", demo.dir.display()))?;
    std::fs::write(
        demo.dir.join("demo.json"),
        format!("{{\"pid\": {}}}\n", std::process::id()),
    )?;

    let keep = args.keep;
    let mut demo = demo;
    let outcome = tokio::select! {
        res = demo.steps(args.rate, args.failovers as usize) => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(figures) => {
            println!("\n== Figures ==");
            figures.print();
            if let Some(path) = &args.summary {
                let mut summary = serde_json::to_value(&figures)?;
                summary["cni"] = args.cni.into();
                summary["native_sidecar"] = args.native_sidecar.into();
                std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let failed = figures.failed_requests > 0;
            if failed {
                println!(
                    "\nthe demo failed: {} vote-bot requests failed during the failovers (must be 0)",
                    figures.failed_requests
                );
            } else {
                println!("\n== Done: every step held ==");
            }
            if keep {
                demo.explain();
            } else {
                println!("\ncleaning up (use --keep to explore instead)");
                demo.teardown()?;
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(e) => {
            eprintln!(
                "\nthe demo failed: {}",
                tandem_util::error_chain(e.as_ref())
            );
            eprintln!(
                "the testbed's logs: {}",
                demo.testbed_dir().join("clusters").display()
            );
            if keep {
                eprintln!("everything is left running (--keep); `tandem demo --down` removes it");
            } else {
                let _ = demo.teardown();
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

impl Demo {
    /// `tandem install-cni` in both clusters, into their nodes' CNI
    /// directories (a real node's would be the defaults).
    fn install_cni(&mut self) -> Result<()> {
        self.title("install the CNI plugin: injected pods need no init container");
        let testbed = tandem_testbed::Testbed::open(&self.testbed_dir())
            .context("reading the demo's testbed")?;
        for c in CLUSTERS {
            let layout = testbed.config.layout(c)?;
            let node = tandem_testbed::node::files::NodeFiles::new(&layout);
            self.sh(&format!(
                "tandem install-cni --dest-cni-net-dir {} --dest-cni-bin-dir {} | kubectl --context {c} apply -f -",
                node.cni_conf_dir().display(),
                node.cni_bin_dir().display()
            ))?;
        }
        for c in CLUSTERS {
            self.sh(&format!(
                "kubectl --context {c} -n tandem-cni rollout status ds/tandem-cni --timeout=120s"
            ))?;
        }
        Ok(())
    }

    async fn steps(&mut self, rate: f64, failovers: usize) -> Result<failover::Figures> {
        std::fs::create_dir_all(self.certs())?;
        self.title("bring up the clusters east and west");
        self.sh(&format!(
            "tandem testbed up --clusters east,west --dir {} --base-port {}",
            self.testbed_dir().display(),
            self.base_port
        ))?;
        self.sh(
            "kubectl --context east get nodes -o wide && kubectl --context west get nodes -o wide",
        )?;

        self.title("create the trust anchor and an issuer per cluster");
        self.sh("tandem certificate create root.linkerd.cluster.local root.crt root.key --profile root-ca --no-password --insecure")?;
        for c in CLUSTERS {
            self.sh(&format!("tandem certificate create identity.linkerd.cluster.local {c}-issuer.crt {c}-issuer.key --profile intermediate-ca --ca root.crt --ca-key root.key --not-after 8760h --no-password --insecure"))?;
        }

        self.title("check that the clusters are ready for tandem");
        for c in CLUSTERS {
            self.sh(&format!("tandem check --pre --context {c}"))?;
        }

        // As Linkerd's order: the plugin first, then the control plane with
        // --linkerd-cni-enabled, which inject reads from the cluster.
        if self.cni {
            self.install_cni()?;
        }
        self.title("install the CRDs and the control plane with the certificates");
        for c in CLUSTERS {
            self.sh(&format!(
                "tandem install --crds --context {c} | kubectl apply --context {c} -f -"
            ))?;
            let mut flags = String::new();
            if self.cni {
                flags.push_str(" --linkerd-cni-enabled");
            }
            if self.native_sidecar {
                flags.push_str(" --native-sidecar");
            }
            self.sh(&format!("tandem install --context {c}{flags} --identity-trust-anchors-file root.crt --identity-issuer-certificate-file {c}-issuer.crt --identity-issuer-key-file {c}-issuer.key | kubectl apply --context {c} -f -"))?;
        }

        self.title("check the installs");
        for c in CLUSTERS {
            self.sh(&format!(
                "kubectl --context {c} -n tandem rollout status deploy/tandem-identity --timeout=120s"
            ))?;
            self.sh(&format!("tandem --context {c} check"))?;
        }

        self.title("install viz: Prometheus scrapes every proxy");
        for c in CLUSTERS {
            self.sh(&format!(
                "tandem --context={c} viz install --set grafana.url=grafana.example:3000 | kubectl --context={c} apply -f -"
            ))?;
        }

        self.title(&format!(
            "mesh and deploy emojivoto in both clusters, vote-bot at {rate}/s"
        ));
        std::fs::write(self.certs().join("emojivoto.yml"), emojivoto(rate))?;
        for c in CLUSTERS {
            self.sh(&format!(
                "cat emojivoto.yml | tandem inject --context {c} - | kubectl --context {c} apply -f -"
            ))?;
        }
        for c in CLUSTERS {
            for deploy in ["emoji", "voting", "web", "vote-bot"] {
                self.sh(&format!(
                    "kubectl --context {c} -n emojivoto rollout status deploy/{deploy} --timeout=180s"
                ))?;
            }
            self.sh(&format!(
                "kubectl --context {c} -n tandem-viz rollout status deploy/prometheus --timeout=120s"
            ))?;
        }
        self.sh("kubectl --context east -n emojivoto get pods")?;
        // The workshop checks again once viz is in: with --proxy, the app's
        // proxies too, each ready and scraped by Prometheus.
        for c in CLUSTERS {
            self.sh(&format!("tandem --context {c} check --proxy -n emojivoto"))?;
        }

        self.title("install smi, failover and multicluster");
        for c in CLUSTERS {
            self.sh(&format!(
                "tandem smi --context={c} install | kubectl --context={c} apply -f -"
            ))?;
            self.sh(&format!(
                "tandem failover install --context {c} | kubectl --context {c} apply -f -"
            ))?;
            self.sh(&format!(
                "tandem --context={c} multicluster install | kubectl --context={c} apply -f -"
            ))?;
        }

        self.title("wait for tandem's pods: the failover controller and the gateway");
        for c in CLUSTERS {
            for (ns, deploy) in [
                ("tandem-failover", "tandem-failover"),
                ("tandem-multicluster", "tandem-gateway"),
            ] {
                self.sh(&format!(
                    "kubectl --context {c} -n {ns} rollout status deploy/{deploy} --timeout=120s"
                ))?;
            }
        }
        self.sh("kubectl --context east -n tandem-multicluster get svc tandem-gateway")?;

        self.title("link the clusters both ways and export emoji-svc");
        // No --api-server-address or --gateway-addresses: the testbed's
        // apiservers and LoadBalancer addresses are reachable from pods.
        for (target, other) in [("west", "east"), ("east", "west")] {
            self.sh(&format!(
                "tandem multicluster --context={target} link --cluster-name={target} | kubectl --context {other} apply -f -"
            ))?;
        }
        for (target, other) in [("west", "east"), ("east", "west")] {
            self.sh(&format!(
                "kubectl --context {other} -n tandem-multicluster rollout status deploy/tandem-service-mirror-{target} --timeout=120s"
            ))?;
        }
        for c in CLUSTERS {
            self.sh(&format!("kubectl --context={c} -n emojivoto label svc/emoji-svc mirror.linkerd.io/exported=true"))?;
        }
        for (c, mirror) in [("east", "emoji-svc-west"), ("west", "emoji-svc-east")] {
            self.wait_for(
                &format!("{mirror} in {c} with a ready endpoint"),
                Duration::from_secs(60),
                || {
                    let out = self.app_get(
                        c,
                        &[
                            "endpointslices",
                            "-l",
                            &format!("kubernetes.io/service-name={mirror}"),
                        ],
                        "{.items[*].endpoints[*].conditions.ready}",
                    )?;
                    Ok(out.split_whitespace().any(|r| r == "true"))
                },
            )
            .await?;
        }
        self.sh("kubectl --context east get svc -n emojivoto")?;
        self.sh("tandem --context east multicluster check")?;
        self.sh("tandem --context east multicluster gateways")?;

        self.title("apply the workshop's TrafficSplit");
        std::fs::write(
            self.certs().join("emoji-split.yaml"),
            tandem_api::smi::workshop_split("v1alpha2", "emojivoto"),
        )?;
        self.sh("kubectl --context east apply -f emoji-split.yaml")?;
        self.wait_for(
            "the split to be under control (state primary)",
            Duration::from_secs(30),
            || Ok(self.split_state()?.as_deref() == Some("primary")),
        )
        .await?;

        self.failovers(failovers, rate).await
    }

    fn split_weights(&self) -> Result<String> {
        let out = self.app_get(
            "east",
            &["ts", "emoji-svc"],
            "{range .spec.backends[*]}{.service}={.weight} {end}",
        )?;
        Ok(out.trim().to_string())
    }

    fn split_state(&self) -> Result<Option<String>> {
        let out = self.app_get(
            "east",
            &["ts", "emoji-svc"],
            "{.metadata.annotations.failover\\.tandem\\.io/state}",
        )?;
        Ok((!out.trim().is_empty()).then(|| out.trim().to_string()))
    }

    fn explain(&self) {
        let kc = self.kubeconfig();
        println!("\nEverything is still running. To explore:\n");
        println!("  export KUBECONFIG={}", kc.display());
        println!("  kubectl --context east -n emojivoto get ts emoji-svc -o yaml");
        println!("  kubectl --context east -n emojivoto scale deploy emoji --replicas=0");
        println!("  tandem --context east failover status");
        println!("  tandem --context east multicluster gateways");
        println!("  tandem --context east check --proxy -n emojivoto");
        println!("  kubectl --context east -n tandem-failover logs deploy/tandem-failover");
        println!("\nStop and remove it all with `tandem demo --down`.");
    }

    /// Stops the demo's testbed and removes its directory.
    fn teardown(&self) -> Result<()> {
        if self.testbed_dir().join("testbed.json").exists() {
            tandem_testbed::Testbed::down(&self.testbed_dir(), true, &tandem_testbed::Quiet)?;
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// emojivoto's manifest (`examples/emojivoto.yml`) with vote-bot's rate.
fn emojivoto(rate: f64) -> String {
    tandem_emojivoto::MANIFEST.replace(
        "- name: REQUEST_RATE\n          value: \"1\"",
        &format!("- name: REQUEST_RATE\n          value: \"{rate}\""),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_gets_the_rate() {
        let m = super::emojivoto(20.0);
        assert!(
            m.contains("- name: REQUEST_RATE\n          value: \"20\""),
            "{m}"
        );
        assert!(!m.contains("value: \"1\""), "{m}");
        let m = super::emojivoto(2.5);
        assert!(m.contains("value: \"2.5\""), "{m}");
    }
}
