//! The app's Kubernetes manifest, shaped like emojivoto's `emojivoto.yml`
//! and kept in the repository as `examples/emojivoto.yml`, so that users
//! read and apply the same file the demo applies.

/// `examples/emojivoto.yml`: namespace `emojivoto`, ServiceAccounts
/// `emoji`, `voting`, `web`, Services `emoji-svc`, `voting-svc`, `web-svc` (a
/// LoadBalancer Service, for the browser)
/// and Deployments `emoji`, `vote-bot`, `voting`, `web`.
pub const MANIFEST: &str = include_str!("../../../examples/emojivoto.yml");

/// The namespace the manifest is written for.
pub const NAMESPACE: &str = "emojivoto";

/// Where the testbed imports the app's image.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/tandem-io/emojivoto";

/// The app's image of this version, `ghcr.io/tandem-io/emojivoto:<version>`.
pub fn image(version: &str) -> String {
    format!("{IMAGE_REPOSITORY}:{version}")
}

/// [`MANIFEST`] for namespace `ns`: the objects' namespace, the Namespace
/// and the services' host names (`web-svc.emojivoto:80`) moved to `ns`;
/// labels (`app.kubernetes.io/part-of: emojivoto`) are kept.
pub fn manifest(ns: &str) -> String {
    MANIFEST
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match line.trim_start() {
                "namespace: emojivoto" => format!("{indent}namespace: {ns}"),
                "name: emojivoto" => format!("{indent}name: {ns}"),
                _ => line.replace(".emojivoto:", &format!(".{ns}:")),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(m: &str) -> Vec<&str> {
        m.split("\n---\n").collect()
    }

    fn field<'a>(doc: &'a str, key: &str) -> Vec<&'a str> {
        doc.lines()
            .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix(key))
            .map(str::trim)
            .collect()
    }

    #[test]
    fn the_manifest_has_emojivotos_objects_and_our_image() {
        let mut objects: Vec<String> = documents(MANIFEST)
            .iter()
            .map(|d| format!("{}/{}", field(d, "kind:")[0], field(d, "name:")[0]))
            .collect();
        objects.sort();
        let want = [
            "Deployment/emoji",
            "Deployment/vote-bot",
            "Deployment/voting",
            "Deployment/web",
            "Namespace/emojivoto",
            "Service/emoji-svc",
            "Service/voting-svc",
            "Service/web-svc",
            "ServiceAccount/emoji",
            "ServiceAccount/voting",
            "ServiceAccount/web",
        ];
        assert_eq!(objects, want);
        let images = field(MANIFEST, "image:");
        assert_eq!(images.len(), 4);
        let ours = image(env!("CARGO_PKG_VERSION"));
        assert!(images.iter().all(|i| *i == ours), "{images:?}");
        assert_eq!(field(MANIFEST, "imagePullPolicy:"), ["IfNotPresent"; 4]);
        // The subcommands the containers run exist.
        let mut args = field(MANIFEST, "- ");
        args.retain(|a| !a.contains(':'));
        let help = <crate::cli::Cli as clap::CommandFactory>::command();
        for deploy in documents(MANIFEST)
            .iter()
            .filter(|d| d.contains("kind: Deployment"))
        {
            let sub = deploy
                .lines()
                .skip_while(|l| l.trim() != "- args:")
                .nth(1)
                .map(|l| l.trim().trim_start_matches("- "))
                .unwrap_or_default();
            assert!(help.find_subcommand(sub).is_some(), "no subcommand {sub:?}");
        }
    }

    #[test]
    fn the_services_have_emojivotos_ports_and_selectors() {
        let docs = documents(MANIFEST);
        let find = |kind: &str, name: &str| {
            *docs
                .iter()
                .find(|d| d.contains(&format!("kind: {kind}\n")) && field(d, "name:")[0] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
        };
        for svc in ["emoji-svc", "voting-svc"] {
            let s = find("Service", svc);
            assert_eq!(field(s, "port:"), ["8080", "8801"], "{svc}");
            assert_eq!(field(s, "app:"), [svc]);
            assert!(field(s, "type:").is_empty(), "{svc} is a ClusterIP Service");
        }
        let web = find("Service", "web-svc");
        assert_eq!(
            (field(web, "port:"), field(web, "targetPort:")),
            (vec!["80"], vec!["8080"])
        );
        // Reachable from outside the cluster (the browser), at an address
        // the cluster's LoadBalancer controller gives it.
        assert_eq!(field(web, "type:"), ["LoadBalancer"]);
        for (deploy, app, account) in [
            ("emoji", "emoji-svc", Some("emoji")),
            ("voting", "voting-svc", Some("voting")),
            ("web", "web-svc", Some("web")),
            ("vote-bot", "vote-bot", None),
        ] {
            let d = find("Deployment", deploy);
            assert_eq!(
                field(d, "app:"),
                [app, app],
                "{deploy} selector and pod labels"
            );
            assert_eq!(field(d, "version:"), ["v11", "v11"], "{deploy}");
            assert_eq!(field(d, "app.kubernetes.io/name:"), [deploy]);
            assert_eq!(field(d, "app.kubernetes.io/part-of:"), ["emojivoto"]);
            assert_eq!(field(d, "serviceAccountName:").first().copied(), account);
        }
        assert!(find("Deployment", "web").contains("value: \"emoji-svc.emojivoto:8080\""));
        assert!(find("Deployment", "vote-bot").contains("value: \"web-svc.emojivoto:80\""));
    }

    #[test]
    fn the_manifest_moves_to_another_namespace() {
        assert_eq!(manifest(NAMESPACE), MANIFEST);
        let moved = manifest("ev-test");
        for line in moved.lines().filter(|l| l.contains("emojivoto")) {
            let kept = line.contains("part-of: emojivoto")
                || line.contains(IMAGE_REPOSITORY)
                || line.starts_with('#');
            assert!(kept, "left behind: {line}");
        }
        assert!(moved.contains("value: \"voting-svc.ev-test:8080\""));
        assert_eq!(moved.matches("namespace: ev-test").count(), 10);
        assert!(moved.contains("kind: Namespace\nmetadata:\n  name: ev-test\n"));
    }
}
