//! `tandem demo`: the workshop's control-plane path, end to end, on a local
//! testbed with real nodes: each step prints the command a user would type
//! and its result, everything tandem installs runs as pods, and the failover
//! and failback are checked, not just shown.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Args;

mod commands;

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
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let tandem = std::env::current_exe().context("finding the tandem binary")?;
    let demo = Demo {
        dir: args.dir.clone(),
        tandem,
        base_port: args.base_port,
        pause: args.pause && std::io::stdin().is_terminal(),
        step: 0,
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
        res = demo.steps() => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(timings) => {
            println!("\n== Done: every step held ==");
            println!(
                "failover (scale to 0 → weights moved):  {:>6} ms",
                timings.0.as_millis()
            );
            println!(
                "failback (scale to 1 → weights back):   {:>6} ms",
                timings.1.as_millis()
            );
            if keep {
                demo.explain();
            } else {
                println!("\ncleaning up (use --keep to explore instead)");
                demo.teardown()?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("\nthe demo failed: {e:#}");
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
    async fn steps(&mut self) -> Result<(Duration, Duration)> {
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

        self.title("install the CRDs and the control plane with the certificates");
        for c in CLUSTERS {
            self.sh(&format!(
                "tandem install --crds --context {c} | kubectl apply --context {c} -f -"
            ))?;
            self.sh(&format!("tandem install --context {c} --identity-trust-anchors-file root.crt --identity-issuer-certificate-file {c}-issuer.crt --identity-issuer-key-file {c}-issuer.key | kubectl apply --context {c} -f -"))?;
        }

        self.title("check the installs");
        for c in CLUSTERS {
            self.sh(&format!("tandem --context {c} check"))?;
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

        self.title("wait for tandem's pods: identity, the failover controller and the gateway");
        for c in CLUSTERS {
            for (ns, deploy) in [
                ("tandem", "tandem-identity"),
                ("tandem-failover", "tandem-failover"),
                ("tandem-multicluster", "tandem-gateway"),
            ] {
                self.sh(&format!(
                    "kubectl --context {c} -n {ns} rollout status deploy/{deploy} --timeout=120s"
                ))?;
            }
        }
        self.sh("kubectl --context east -n tandem-multicluster get svc tandem-gateway")?;

        self.title("deploy the emojivoto-shaped app in both clusters");
        let app = emojivoto();
        std::fs::write(self.certs().join("emojivoto.yaml"), app)?;
        for c in CLUSTERS {
            self.sh(&format!("kubectl --context {c} apply -f emojivoto.yaml"))?;
        }
        for c in CLUSTERS {
            self.wait_for(
                &format!("emojivoto to be available in {c}"),
                Duration::from_secs(60),
                || {
                    let out = self.kubectl(&[
                        "--context",
                        c,
                        "-n",
                        "emojivoto",
                        "get",
                        "deploy",
                        "-o",
                        "jsonpath={.items[*].status.availableReplicas}",
                    ])?;
                    Ok(out.split_whitespace().count() == 3)
                },
            )
            .await?;
        }

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
                    let out = self.kubectl(&[
                        "--context",
                        c,
                        "-n",
                        "emojivoto",
                        "get",
                        "endpointslices",
                        "-l",
                        &format!("kubernetes.io/service-name={mirror}"),
                        "-o",
                        "jsonpath={.items[*].endpoints[*].conditions.ready}",
                    ])?;
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

        self.title("scale emoji in east to 0: the weights move to emoji-svc-west");
        self.sh("kubectl --context east -n emojivoto scale deploy emoji --replicas=0")?;
        let failover = self
            .wait_for(
                "weights emoji-svc=0, emoji-svc-west=1",
                Duration::from_secs(30),
                || Ok(self.split_weights()? == "emoji-svc=0 emoji-svc-west=1"),
            )
            .await?;
        self.sh(
            "kubectl --context east -n emojivoto get ts emoji-svc -o yaml | sed -n '/^spec:/,$p'",
        )?;
        self.sh("tandem --context east failover status")?;

        self.title("scale emoji back to 1: traffic fails back");
        self.sh("kubectl --context east -n emojivoto scale deploy emoji --replicas=1")?;
        let failback = self
            .wait_for(
                "weights emoji-svc=1, emoji-svc-west=0",
                Duration::from_secs(30),
                || Ok(self.split_weights()? == "emoji-svc=1 emoji-svc-west=0"),
            )
            .await?;
        self.sh("kubectl --context east -n emojivoto get events --field-selector involvedObject.kind=TrafficSplit")?;
        Ok((failover, failback))
    }

    fn split_weights(&self) -> Result<String> {
        let out = self.kubectl(&[
            "--context",
            "east",
            "-n",
            "emojivoto",
            "get",
            "ts",
            "emoji-svc",
            "-o",
            "jsonpath={range .spec.backends[*]}{.service}={.weight} {end}",
        ])?;
        Ok(out.trim().to_string())
    }

    fn split_state(&self) -> Result<Option<String>> {
        let out = self.kubectl(&[
            "--context",
            "east",
            "-n",
            "emojivoto",
            "get",
            "ts",
            "emoji-svc",
            "-o",
            "jsonpath={.metadata.annotations.failover\\.tandem\\.io/state}",
        ])?;
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
        println!("  tandem --context east check");
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

/// The emojivoto shape: web, emoji and voting, each a Deployment and a
/// Service, with emojivoto's names and ports. Until the emojivoto-compatible
/// app exists, each runs the tandem image (which the testbed loads) serving
/// a readiness endpoint on the app's port, so that readiness is real.
fn emojivoto() -> String {
    let image = format!("ghcr.io/tandem-io/tandem:{}", env!("CARGO_PKG_VERSION"));
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: emojivoto}\n");
    for (app, port) in [("web", 80), ("emoji", 8080), ("voting", 8080)] {
        out.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}, namespace: emojivoto}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {app}-svc}}}}
  template:
    metadata: {{labels: {{app: {app}-svc}}}}
    spec:
      containers:
      - name: {app}-svc
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [gateway, --probe-only, --admin-addr, "0.0.0.0:{port}"]
        ports: [{{containerPort: {port}}}]
        readinessProbe: {{httpGet: {{path: /ready, port: {port}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {app}-svc, namespace: emojivoto}}
spec:
  selector: {{app: {app}-svc}}
  ports: [{{name: http, port: {port}, targetPort: {port}}}]
"#
        ));
    }
    out
}
