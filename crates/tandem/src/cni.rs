//! `tandem-cni`: the chained CNI plugin of CNI mode (`tandem install-cni`,
//! `tandem inject --linkerd-cni-enabled`), as linkerd-cni.
//!
//! The `tandem` binary runs as the plugin when its file name is
//! `tandem-cni` (the DaemonSet copies it so into the node's CNI bin dir).
//! The runtime calls it after the cluster's own plugins, once the pod's
//! network namespace has its interface. containerd hands it the pod's
//! annotations (the capability `io.kubernetes.cri.pod-annotations`), so it
//! needs no API server: an injected pod carries the arguments its init
//! container would have run (`cni.tandem.io/proxy-init`), and the plugin
//! installs those rules in the pod's namespace, with the same transaction
//! as `tandem proxy-init`. A pod without the annotation passes through
//! untouched.
//!
//! Why it is faster than the init container: the rules go in while the
//! sandbox is made, so the kubelet starts the proxy at once instead of
//! waiting for an init container to run and for its next look (relist) at
//! the pod's containers to see it exit.
//!
//! - ADD: the previous plugin's result, unchanged; an error (the pod does
//!   not start, and its events say why) if the annotation is malformed or
//!   the rules cannot be installed. A meshed pod never runs unredirected.
//! - CHECK: an error if an annotated pod's namespace lacks the rules.
//! - DEL and GC: nothing; the rules go with the namespace.
//! - STATUS: an error if no iptables is installed on the node.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Parser;
use nix::sched::{CloneFlags, setns};
use rscni_plugin::{
    cni::{Cni, Plugin},
    error::Error,
    types::{Args, CNIResult},
};
use serde_json::Value;
use tandem_inject::PROXY_INIT_ANNOTATION;
// The plugin's file name (and `type`), and the capability under which
// containerd (and CRI-O) pass the pod's annotations in `runtimeConfig`.
use tandem_install::cni::{PLUGIN_TYPE, POD_ANNOTATIONS_CAPABILITY as POD_ANNOTATIONS};

use crate::proxy_init::{self, ProxyInitArgs};

/// True if this process was started as the CNI plugin.
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .is_some_and(|argv0| argv0.file_name() == Some(OsStr::new(PLUGIN_TYPE)))
}

/// Runs the CNI protocol on this process's environment, stdin and stdout.
pub fn main() -> ExitCode {
    let plugin = Plugin::default().msg(concat!(
        "tandem-cni ",
        env!("CARGO_PKG_VERSION"),
        ": installs the proxy's iptables redirect in injected pods (tandem install-cni)"
    ));
    match plugin.run(&TandemCni) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

struct TandemCni;

/// proxy-init's flags, parsed from the annotation as from a command line.
#[derive(Debug, Parser)]
#[command(name = "proxy-init")]
struct FromAnnotation {
    #[command(flatten)]
    args: ProxyInitArgs,
}

/// The pod's proxy-init arguments, if it is an injected pod: `Ok(None)`
/// for a pod without the annotation (or a runtime that passed none).
fn requested(runtime_config: Option<&Value>) -> Result<Option<ProxyInitArgs>, String> {
    let Some(annotations) = runtime_config.and_then(|c| c.get(POD_ANNOTATIONS)) else {
        return Ok(None);
    };
    let Some(value) = annotations.get(PROXY_INIT_ANNOTATION) else {
        return Ok(None);
    };
    let bad = |why: String| format!("the pod's annotation {PROXY_INIT_ANNOTATION}: {why}");
    let text = value
        .as_str()
        .ok_or_else(|| bad(format!("{value} is not a string")))?;
    let list: Vec<String> = serde_json::from_str(text)
        .map_err(|e| bad(format!("{text:?} is not a JSON list of strings ({e})")))?;
    let argv = std::iter::once("proxy-init".to_string()).chain(list);
    FromAnnotation::try_parse_from(argv)
        .map(|f| Some(f.args))
        .map_err(|e| bad(e.render().to_string().trim().to_string()))
}

/// `namespace/name` of the pod, from `CNI_ARGS` (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
fn pod_name(cni_args: Option<&str>) -> String {
    let value = |key: &str| {
        cni_args?
            .split(';')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    match (value("K8S_POD_NAMESPACE"), value("K8S_POD_NAME")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => "a pod".to_string(),
    }
}

fn runtime_config(args: &Args) -> Option<Value> {
    let custom = &args.config().runtime_config.as_ref()?.custom;
    serde_json::to_value(custom).ok()
}

/// Runs `f` on a thread that has entered the network namespace `netns`;
/// the programs it starts inherit it.
fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> Result<T, Error> {
    let file = File::open(netns)
        .map_err(|e| Error::InvalidNetNS(format!("opening {}: {e}", netns.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::InvalidNetNS(format!("entering {}: {e}", netns.display())))?;
            f().map_err(|e| Error::Custom(100, "installing the redirect".into(), format!("{e:#}")))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Custom(
                100,
                "installing the redirect".into(),
                "the thread stopped".into(),
            ))
        })
    })
}

fn netns(args: &Args) -> Result<&Path, Error> {
    args.netns()
        .map(PathBuf::as_path)
        .ok_or_else(|| Error::InvalidEnvValue("CNI_NETNS is not set".into()))
}

impl Cni for TandemCni {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let previous = args.config().prev_result.clone().unwrap_or_default();
        let pod = pod_name(args.args());
        let wanted = requested(runtime_config(&args).as_ref())
            .map_err(|e| Error::InvalidNetworkConfig(format!("{pod}: {e}")))?;
        let Some(wanted) = wanted else {
            return Ok(previous);
        };
        let netns = netns(&args)?;
        let said = in_netns(netns, || {
            let mut log = Vec::new();
            proxy_init::install(&wanted, &mut log)?;
            Ok(String::from_utf8_lossy(&log).into_owned())
        })
        .map_err(|e| match e {
            Error::Custom(code, msg, details) => {
                Error::Custom(code, format!("{pod}: {msg}"), details)
            }
            other => other,
        })?;
        let first = said.lines().next().unwrap_or_default();
        eprintln!("tandem-cni: {pod}: {first}");
        Ok(previous)
    }

    fn del(&self, _args: Args) -> Result<(), Error> {
        Ok(())
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let pod = pod_name(args.args());
        let wanted = requested(runtime_config(&args).as_ref())
            .map_err(|e| Error::InvalidNetworkConfig(format!("{pod}: {e}")))?;
        let Some(wanted) = wanted else {
            return Ok(());
        };
        let netns = netns(&args)?;
        let missing = in_netns(netns, || proxy_init::missing(&wanted))?;
        match missing {
            None => Ok(()),
            Some(missing) => Err(Error::Custom(
                101,
                format!("{pod}: the proxy's redirect is not installed"),
                format!("missing: {missing}"),
            )),
        }
    }

    fn status(&self, _args: Args) -> Result<(), Error> {
        proxy_init::find_iptables()
            .map(drop)
            .map_err(|e| Error::PluginNotAvailable(format!("{e:#}")))
    }

    fn gc(&self, _args: Args) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_is_redirected_only_if_it_carries_well_formed_arguments() {
        let with = |annotations: Value| json!({ POD_ANNOTATIONS: annotations });
        let args = r#"["--incoming-proxy-port","4143","--inbound-ports-to-ignore","4190,4191"]"#;
        let parsed = requested(Some(&with(json!({ PROXY_INIT_ANNOTATION: args }))))
            .unwrap()
            .expect("an injected pod");
        let shown = format!("{parsed:?}");
        assert!(shown.contains("incoming_proxy_port: 4143"), "{shown}");

        for none in [
            None,
            Some(json!({})),
            Some(with(json!({}))),
            Some(with(json!({ "linkerd.io/inject": "enabled" }))),
        ] {
            assert!(requested(none.as_ref()).unwrap().is_none(), "{none:?}");
        }

        for (annotation, says) in [
            (json!(7), "is not a string"),
            (json!("--proxy-uid 2102"), "not a JSON list of strings"),
            (json!(r#"["--proxy-uid","root"]"#), "invalid value 'root'"),
            (json!(r#"["--no-such-flag"]"#), "--no-such-flag"),
            (
                json!(r#"["--inbound-ports-to-ignore","80,http"]"#),
                "\"http\"",
            ),
        ] {
            let err = requested(Some(&with(json!({ PROXY_INIT_ANNOTATION: annotation }))))
                .expect_err("refused");
            assert!(err.contains(PROXY_INIT_ANNOTATION), "{err}");
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
    }

    #[test]
    fn the_pod_is_named_from_the_runtimes_arguments() {
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=emojivoto;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc";
        assert_eq!(pod_name(Some(args)), "emojivoto/web-1");
        assert_eq!(pod_name(Some("IgnoreUnknown=1")), "a pod");
        assert_eq!(pod_name(None), "a pod");
    }
}
