//! `up`: preparing and starting every cluster, and what a cluster needs
//! before it is ready (its kwok node, the Gateway API CRDs, the default
//! ServiceAccount, CoreDNS on real nodes).

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Node, ServiceAccount},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use tandem_util::call::call_retrying;

use super::{
    Testbed, groups,
    health::{admin_config, cluster_err, start_healthy, wait_until},
    state::{STATE_FILE, STATE_VERSION, State, Status, UpOutcome, lock_dir, read_state},
};
use crate::{
    ClusterLayout, Component, Config, Error, Nodes, Progress, Toolchain,
    component::{self, KWOK_STAGES},
    kubeconfig,
    node::{self, addons},
    pki::{Pki, write_private},
    toolchain,
};

impl Testbed {
    /// Starts the clusters of `config`, or finds them already running.
    pub async fn up(config: Config, progress: &dyn Progress) -> Result<(Self, UpOutcome), Error> {
        let _lock = lock_dir(&config.dir)?;
        if let Some(state) = read_state(&config.dir)? {
            if state.clusters != config.clusters
                || state.base_port != config.base_port
                || state.nodes != config.nodes
            {
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "it holds a testbed of clusters {} on base port {} with {} nodes, not {} on {} with {} nodes.\n  Run `tandem testbed down --purge --dir {}` to remove it, or use another --dir",
                        state.clusters.join(","),
                        state.base_port,
                        state.nodes.name(),
                        config.clusters.join(","),
                        config.base_port,
                        config.nodes.name(),
                        config.dir.display()
                    ),
                });
            }
            let tb = Testbed {
                config: state.config(&config.dir)?,
                state,
            };
            let procs = tb.processes();
            let recorded: Vec<_> = procs.iter().filter(|(_, _, id)| id.is_some()).collect();
            let alive: Vec<_> = recorded
                .iter()
                .filter(|(_, _, id)| id.is_some_and(|id| id.is_alive()))
                .collect();
            if !recorded.is_empty() && alive.len() == procs.len() {
                let status = tb.status().await;
                if status.healthy() {
                    progress.step("the testbed is already running");
                    if tb.config.nodes == Nodes::Real {
                        // The images of this tandem, which may be newer than
                        // the running testbed's.
                        let tc = tb.toolchain();
                        for l in tb.config.layouts() {
                            let (layout, toolchain) = (l.clone(), tc.clone());
                            let n = tokio::task::spawn_blocking(move || {
                                node::load_images(&layout, &toolchain)
                            })
                            .await
                            .map_err(|e| cluster_err(&l.name, format!("loading images: {e}")))??;
                            if n > 0 {
                                progress.step(&format!("{}: loaded {n} newer image(s)", l.name));
                            }
                        }
                    }
                    return Ok((tb, UpOutcome::AlreadyRunning));
                }
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "the testbed runs but is unhealthy ({}).\n  Run `tandem testbed down --dir {dir}` and `tandem testbed up --dir {dir}` to restart it",
                        unhealthy_list(&status),
                        dir = config.dir.display()
                    ),
                });
            }
            if !recorded.is_empty() {
                let dead: Vec<String> = recorded
                    .iter()
                    .filter(|(_, _, id)| !id.is_some_and(|id| id.is_alive()))
                    .map(|(l, c, _)| format!("{}/{c}", l.name))
                    .collect();
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "it holds a testbed that did not stop cleanly (not running: {}).\n  Run `tandem testbed down --dir {dir}` to clear it (cluster data is kept), then `tandem testbed up` again",
                        dead.join(", "),
                        dir = config.dir.display()
                    ),
                });
            }
        }

        let mut config = config;
        if config.nodes == Nodes::Real {
            node::check_prerequisites()?;
            // Keep the slot of an earlier run, so the addresses stay the same.
            let slot = match read_state(&config.dir)? {
                Some(state) => state.slot,
                None => node::choose_slot(&config.dir)?,
            };
            config = config.with_slot(slot)?;
            node::refuse_leftovers(&config)?;
        }
        check_ports(&config)?;
        let tc = Toolchain::ensure_groups(progress, groups(config.nodes))?;
        let state = State {
            version: STATE_VERSION,
            kube_version: tc.kube_version.clone(),
            bin_dir: tc.bin_dir.clone(),
            base_port: config.base_port,
            clusters: config.clusters.clone(),
            nodes: config.nodes,
            slot: config.slot,
        };
        let tb = Testbed { config, state };
        let state_path = tb.config.dir.join(STATE_FILE);
        let state_json = serde_json::to_string_pretty(&tb.state).expect("state serializes");
        fs::write(&state_path, state_json).map_err(|e| Error::io(&state_path, e))?;

        match tb.start_all(progress).await {
            Ok(()) => Ok((tb, UpOutcome::Started)),
            Err(e) => {
                progress.step("start failed; stopping what was started");
                let _ = tb.stop_all(&crate::Quiet);
                Err(e)
            }
        }
    }

    async fn start_all(&self, progress: &dyn Progress) -> Result<(), Error> {
        let layouts = self.config.layouts();
        for l in &layouts {
            self.prepare(l)?;
        }
        let kubeconfig = kubeconfig::user_kubeconfig(&layouts)?;
        let path = self.kubeconfig_path();
        write_private(&path, &kubeconfig)?;
        if self.config.nodes == Nodes::Real {
            node::setup_host(&self.config, progress)?;
            let tc = self.toolchain();
            for l in &layouts {
                node::write_files(l, &tc)?;
            }
        }

        let tc = self.toolchain();
        let starts = layouts.iter().map(|l| self.start_cluster(l, &tc, progress));
        let results = futures::future::join_all(starts).await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }

    /// Certificates, kubeconfigs and kwok's stages for one cluster.
    fn prepare(&self, l: &ClusterLayout) -> Result<(), Error> {
        fs::create_dir_all(&l.dir).map_err(|e| Error::io(&l.dir, e))?;
        Pki::new(l).ensure(l)?;
        for c in Component::started(l.nodes).into_iter().filter(|c| {
            !matches!(
                c,
                Component::Etcd | Component::KubeApiserver | Component::Containerd
            )
        }) {
            let body = kubeconfig::component_kubeconfig(l, c)?;
            write_private(&l.component_kubeconfig(c), &body)?;
        }
        let stages = component::kwok_config_path(l);
        fs::write(&stages, KWOK_STAGES).map_err(|e| Error::io(&stages, e))
    }

    async fn start_cluster(
        &self,
        l: &ClusterLayout,
        tc: &Toolchain,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let base = admin_config(&self.kubeconfig_path(), &l.name).await?;
        // When this cluster's kubelet started: its node is Ready only with a
        // heartbeat from then on, not by a status left in etcd by the last run.
        let mut kubelet_since = None;
        for c in Component::started(l.nodes) {
            let t = Instant::now();
            let since = start_healthy(l, tc, c, &base).await?;
            if c == Component::Kubelet {
                kubelet_since = Timestamp::try_from(since).ok();
            }
            progress.step(&format!(
                "{}: {c} healthy in {:.1}s",
                l.name,
                t.elapsed().as_secs_f64()
            ));
            if c == Component::Containerd {
                // Before the kubelet starts: it would try to pull the
                // pinned sandbox image, which cannot succeed here.
                let t = Instant::now();
                let (layout, toolchain) = (l.clone(), tc.clone());
                let images =
                    tokio::task::spawn_blocking(move || node::load_images(&layout, &toolchain))
                        .await
                        .map_err(|e| cluster_err(&l.name, format!("loading images: {e}")))??;
                progress.step(&format!(
                    "{}: loaded {} image(s) into containerd in {:.1}s",
                    l.name,
                    images,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        let client = Client::try_from(base).map_err(|e| cluster_err(&l.name, e))?;
        register_node(&client, l).await?;
        install_gateway_api(&client, l, tc).await?;
        wait_until(
            &l.name,
            "the node to become Ready",
            Duration::from_secs(60),
            || node_ready(&client, l, kubelet_since),
        )
        .await?;
        wait_until(
            &l.name,
            "the default ServiceAccount (made by kube-controller-manager)",
            Duration::from_secs(60),
            || default_sa_exists(&client),
        )
        .await?;
        if l.nodes == Nodes::Real {
            let image = addons::coredns_image(&toolchain::coredns_version());
            addons::apply(&client, l, &addons::coredns_objects(l, &image)).await?;
            wait_until(
                &l.name,
                "CoreDNS to become Ready",
                Duration::from_secs(90),
                || addons::coredns_ready(&client),
            )
            .await?;
        }
        progress.step(&format!(
            "{}: ready in {:.1}s ({}, pods {}, services {})",
            l.name,
            start.elapsed().as_secs_f64(),
            l.apiserver_url(),
            l.pod_cidr(),
            l.service_cidr()
        ));
        Ok(())
    }
}

fn unhealthy_list(status: &Status) -> String {
    status
        .clusters
        .iter()
        .flat_map(|c| {
            c.components
                .iter()
                .filter(|s| !s.healthy)
                .map(move |s| format!("{}/{}", c.name, s.component))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_ports(config: &Config) -> Result<(), Error> {
    for l in config.layouts() {
        for (c, port) in l.ports() {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortInUse {
                    port,
                    component: c.to_string(),
                    cluster: l.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Creates the cluster's kwok node; kwok then makes it Ready. Beside a real
/// node it is tainted, as kwok's convention is, so that only pods that
/// tolerate it (benchmarks of many pods) land there.
async fn register_node(client: &Client, l: &ClusterLayout) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = l.kwok_node_name();
    let taints = (l.nodes == Nodes::Real).then(|| {
        vec![k8s_openapi::api::core::v1::Taint {
            key: component::KWOK_TAINT.to_string(),
            value: Some("fake".to_string()),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        }]
    });
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("type".to_string(), "kwok".to_string()),
                ("topology.kubernetes.io/zone".to_string(), l.name.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                component::KWOK_NODE_ANNOTATION.to_string(),
                "fake".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some(l.kwok_pod_cidr()),
            pod_cidrs: Some(vec![l.kwok_pod_cidr()]),
            taints,
            ..Default::default()
        }),
        status: None,
    };
    // A create whose answer was lost is made again and then meets itself.
    let post = PostParams::default();
    match call_retrying(&format!("creating node {name}"), || {
        nodes.create(&post, &node)
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(cluster_err(&l.name, e)),
    }
}

/// The Gateway API's standard CRDs (HTTPRoute among them), from the Go
/// module, applied server-side so that a restart re-applies them harmlessly.
async fn install_gateway_api(
    client: &Client,
    l: &ClusterLayout,
    tc: &Toolchain,
) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let dir = tc.artifact(toolchain::GATEWAY_API_CRDS);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text)
            .map_err(|e| cluster_err(&l.name, format!("{}: {e}", file.display())))?;
        for crd in docs {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let params = kube::api::PatchParams::apply("tandem-testbed").force();
            let patch = kube::api::Patch::Apply(&crd);
            call_retrying(&format!("applying CRD {name}"), || {
                crds.patch(&name, &params, &patch)
            })
            .await
            .map_err(|e| cluster_err(&l.name, e))?;
        }
    }
    Ok(())
}

async fn node_ready(
    client: &Client,
    l: &ClusterLayout,
    since: Option<Timestamp>,
) -> Result<bool, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(ready_since(&nodes.get(&l.node_name()).await?, since))
}

/// The node's Ready condition is True and, when `since` is given, was
/// reported at or after it (the API keeps whole seconds).
fn ready_since(node: &Node, since: Option<Timestamp>) -> bool {
    let since = since.and_then(|t| Timestamp::from_second(t.as_second()).ok());
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && since.is_none_or(|since| {
                    c.last_heartbeat_time.as_ref().is_some_and(|t| t.0 >= since)
                })
        })
}

async fn default_sa_exists(client: &Client) -> Result<bool, kube::Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    Ok(sas.get_opt("default").await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{api::core::v1::NodeCondition, apimachinery::pkg::apis::meta::v1::Time};

    fn node(status: &str, heartbeat: Option<&str>) -> Node {
        Node {
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: heartbeat.map(|t| Time(t.parse().unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_ready_status_left_from_the_last_run_is_not_ready() {
        let start: Timestamp = "2026-12-03T08:51:42.015Z".parse().unwrap();
        // Left in etcd by the kubelet of the last run.
        assert!(!ready_since(
            &node("True", Some("2026-12-03T08:41:58Z")),
            Some(start)
        ));
        // Reported in the second the kubelet started (the API keeps seconds).
        assert!(ready_since(
            &node("True", Some("2026-12-03T08:51:42Z")),
            Some(start)
        ));
        assert!(!ready_since(
            &node("False", Some("2026-12-03T08:51:43Z")),
            Some(start)
        ));
        assert!(!ready_since(&node("True", None), Some(start)));
        assert!(!ready_since(&Node::default(), None));
        // kwok's node: Ready is enough.
        assert!(ready_since(&node("True", None), None));
    }

    #[test]
    fn a_taken_port_is_named_with_its_owner() {
        // A base below the ephemeral range whose ports are free now; then the
        // second cluster's apiserver port is taken.
        let (config, listener) = (19_400u16..19_900)
            .step_by(20)
            .find_map(|base| {
                let config = Config::new(
                    "/tb".into(),
                    base,
                    vec!["east".into(), "west".into()],
                    Nodes::Fake,
                )
                .ok()?;
                check_ports(&config).ok()?;
                let west = config.layout("west").ok()?;
                let listener =
                    TcpListener::bind(("127.0.0.1", west.port(Component::KubeApiserver))).ok()?;
                Some((config, listener))
            })
            .expect("some base port between 19400 and 19900 has free ports");
        let port = listener.local_addr().unwrap().port();
        match check_ports(&config) {
            Err(Error::PortInUse {
                port: p,
                component,
                cluster,
            }) => {
                assert_eq!(p, port);
                assert_eq!(component, "kube-apiserver");
                assert_eq!(cluster, "west");
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
    }
}
