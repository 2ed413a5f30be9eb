//! `tandem inject`: adds tandem's proxy to workloads, as Linkerd 2.12's
//! proxy injector does, and `tandem proxy-init`'s iptables rules.
//!
//! Pure: text in, text out; nothing here reads a cluster or runs a program.
//!
//! - [`inject_stream`] reads a YAML stream (one or many documents, `kind:
//!   List` and any `*List` included) and returns it with every pod template
//!   of a Deployment, StatefulSet, DaemonSet, ReplicaSet,
//!   ReplicationController, Job, CronJob (its `jobTemplate`) or bare Pod
//!   injected, in the same order, plus one [`Report`] per object.
//! - [`proxy_init::rules`] is the list of `iptables` commands the init
//!   container runs.
//!
//! What injection adds (tandem has no webhook yet, so this is Linkerd's
//! webhook patch, done by the CLI: "manual" mode):
//! - the init container `tandem-init` (`tandem proxy-init ...`), or in CNI
//!   mode ([`Config::with_cni`], as Linkerd's `--linkerd-cni-enabled`) no
//!   init container but the annotation [`PROXY_INIT_ANNOTATION`] with its
//!   arguments, for the `tandem-cni` plugin. The init container runs as root
//!   with only NET_ADMIN and NET_RAW (iptables in the pod's network
//!   namespace needs both. Linkerd 2.12 runs it as uid 65534, which works
//!   only because its image gives the iptables binaries file capabilities;
//!   tandem's image carries Debian's binaries as they are, so root with
//!   every other capability dropped is the simple safe choice), with an
//!   emptyDir at /run for the xtables lock;
//! - the sidecar `tandem-proxy` (`tandem proxy`), **first** in the
//!   containers with the postStart hook `tandem proxy-await`, as Linkerd
//!   2.12 does by default (`proxy.await=true`), so that kubelet starts the
//!   application once the proxy is ready (`config.linkerd.io/proxy-await:
//!   disabled` on the template: last, no hook); uid 2102, read-only root
//!   file system, no capabilities; the `LINKERD2_PROXY_*` environment;
//!   probes `/live` and `/ready` on 4191. As a **native sidecar**
//!   ([`Config::with_native_sidecar`], or [`NATIVE_SIDECAR_ANNOTATION`]:
//!   `true` on the template, as Linkerd 2.15+) the proxy is instead an init
//!   container with `restartPolicy: Always`, right after `tandem-init` and
//!   before the template's own init containers (which so run meshed), with
//!   the same hook: kubelet starts the next container once it returns, stops
//!   the proxy after the application, and a Job's pod completes;
//! - the volumes `tandem-identity-end-entity` (memory) and
//!   `tandem-identity-token` (a projected ServiceAccount token for audience
//!   `identity.l5d.io`);
//! - Linkerd's labels and annotations (`linkerd.io/control-plane-ns`,
//!   `linkerd.io/proxy-<kind>`, `linkerd.io/workload-ns`,
//!   `linkerd.io/created-by`, ...), so that Linkerd-style Prometheus
//!   relabeling and `viz stat` queries work unchanged.
//!
//! Port names: the proxy's ports are `tandem-proxy` (4143) and
//! `tandem-admin` (4191), matching the container name `tandem-proxy`.
//! Linkerd's scrape job keeps targets by `container;port;control-plane-ns`
//! (`linkerd-proxy;linkerd-admin;linkerd`); for tandem the keep regex reads
//! `tandem-proxy;tandem-admin;<control-plane ns>` and every relabel rule
//! after it works as it is.
//!
//! Skipped, with a reason in the report: templates annotated
//! `linkerd.io/inject: disabled`, `hostNetwork` pods (the redirect would
//! capture the node's traffic), templates that already hold a tandem or
//! Linkerd proxy (so injecting twice equals injecting once), and templates
//! with a malformed `config.linkerd.io/skip-*-ports` annotation. Objects of
//! other kinds pass through byte for byte.
//!
//! A document that does not parse fails the whole stream: every broken
//! document is named (1-based index and line), and nothing is returned, so
//! that `tandem inject x.yaml | kubectl apply -f -` never applies half a
//! file. (`linkerd inject` prints its error and carries on.)
//!
//! Re-rendered documents have their keys in sorted order (`serde_json`
//! maps are sorted); their content is unchanged apart from the injection.

#![forbid(unsafe_code)]

mod config;
mod pod;
mod ports;
pub mod proxy_init;
mod stream;
mod workload;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError};
pub use ports::{PortRange, PortsError, parse_ports};
pub use stream::{DocumentError, Injected, StreamError, inject_stream};
pub use workload::{Outcome, Report, Skip, inject_object, summary};

/// The proxy's inbound port (container port `tandem-proxy`).
pub const INBOUND_PORT: u16 = 4143;
/// The proxy's outbound port, on 127.0.0.1.
pub const OUTBOUND_PORT: u16 = 4140;
/// The proxy's admin port: `/live`, `/ready`, `/metrics`.
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's control (tap) port.
pub const CONTROL_PORT: u16 = 4190;
/// The proxy's uid; proxy-init lets this uid's traffic out unredirected.
pub const PROXY_UID: u32 = 2102;

/// The sidecar's container name.
pub const PROXY_CONTAINER: &str = "tandem-proxy";
/// The init container's name.
pub const INIT_CONTAINER: &str = "tandem-init";
/// Names of containers that mean "already injected": tandem's and Linkerd's.
pub const KNOWN_SIDECARS: &[&str] = &[
    PROXY_CONTAINER,
    INIT_CONTAINER,
    "linkerd-proxy",
    "linkerd-init",
];
/// The name of the inbound port.
pub const PROXY_PORT_NAME: &str = "tandem-proxy";
/// The name of the admin port (the one to scrape).
pub const ADMIN_PORT_NAME: &str = "tandem-admin";

/// The audience of the projected token identity reviews (Linkerd's).
pub const TOKEN_AUDIENCE: &str = "identity.l5d.io";
/// Where the proxy keeps its key and certificate (a memory emptyDir).
pub const IDENTITY_DIR: &str = "/var/run/tandem/identity/end-entity";
/// Where the projected token volume is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "tandem-identity-token";

/// Volume names.
pub const END_ENTITY_VOLUME: &str = "tandem-identity-end-entity";
pub const TOKEN_VOLUME: &str = "tandem-identity-token";
pub const XTABLES_LOCK_VOLUME: &str = "tandem-proxy-init-xtables-lock";

/// Ports the redirect skips by default in both directions besides the
/// proxy's own (Linkerd's `proxyInit.ignore{In,Out}boundPorts`).
pub const DEFAULT_IGNORED_PORTS: &str = "4567,4568";
/// Ports whose traffic is not protocol-detected (Linkerd's defaults:
/// server-speaks-first protocols such as SMTP, MySQL, Redis).
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";
/// The networks the proxy asks the destination service about.
pub const CLUSTER_NETWORKS: &str = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16";

/// Annotations read from the pod template.
pub const INJECT_ANNOTATION: &str = "linkerd.io/inject";
pub const SKIP_INBOUND_ANNOTATION: &str = "config.linkerd.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_ANNOTATION: &str = "config.linkerd.io/skip-outbound-ports";
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.linkerd.io/opaque-ports";
/// `disabled`: the proxy goes last, without the postStart hook.
pub const PROXY_AWAIT_ANNOTATION: &str = "config.linkerd.io/proxy-await";
/// `true` or `false`: the proxy as a native sidecar (an init container with
/// `restartPolicy: Always`), overriding [`Config::with_native_sidecar`].
/// Linkerd 2.19's name; [`NATIVE_SIDECAR_ALPHA_ANNOTATION`] is read too.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "config.beta.linkerd.io/proxy-enable-native-sidecar";
/// Linkerd 2.15-2.18's name of [`NATIVE_SIDECAR_ANNOTATION`].
pub const NATIVE_SIDECAR_ALPHA_ANNOTATION: &str =
    "config.alpha.linkerd.io/proxy-enable-native-sidecar";
/// Written on the pod in CNI mode: a JSON list of the `tandem proxy-init`
/// arguments the init container would have run, for the `tandem-cni`
/// plugin (which containerd hands the pod's annotations).
pub const PROXY_INIT_ANNOTATION: &str = "cni.tandem.io/proxy-init";
