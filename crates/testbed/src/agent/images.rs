//! Image hints. The testbed's nodes never pull: an image that was not loaded
//! leaves the pod waiting with `ErrImageNeverPull` (or, under
//! `imagePullPolicy: IfNotPresent`, a pull that cannot succeed). The user
//! gets one Warning Event `ImageNotLoaded` on the Pod per image, naming the
//! command that loads it.

use std::collections::{BTreeSet, HashSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use kube::{Api, Client, Resource, ResourceExt, runtime::watcher};
use tandem_runtime::watch::Update;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{
    metrics::Metrics,
    writer::{Command, Note},
};

/// The waiting reasons of a container whose image is not on the node.
pub const NOT_LOADED_REASONS: [&str; 3] = ["ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff"];

/// The Event's reason.
pub const REASON: &str = "ImageNotLoaded";

/// One image a pod waits for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hint {
    /// The image reference, as the pod spec writes it.
    pub image: String,
    /// The first container waiting for it.
    pub container: String,
    /// The kubelet's waiting reason.
    pub reason: String,
}

impl Hint {
    /// The Event's text.
    pub fn note(&self) -> String {
        let image = &self.image;
        format!(
            "image {image} is not loaded on the testbed's nodes (they never pull): build an archive and run `tandem testbed load ARCHIVE`, or `tandem testbed load --binary PATH --as {image}`"
        )
    }
}

/// The images `pod` waits for because they are not loaded: one hint per
/// image, in the order of the pod's containers (init, then regular, then
/// ephemeral).
pub fn hints(pod: &Pod) -> Vec<Hint> {
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return vec![];
    };
    let spec_image = |containers: &[Container], name: &str| {
        containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
    };
    let ephemeral: Vec<Container> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            image: e.image.clone(),
            ..Container::default()
        })
        .collect();
    let groups: [(&[ContainerStatus], &[Container]); 3] = [
        (
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default(),
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        (
            status.container_statuses.as_deref().unwrap_or_default(),
            &spec.containers,
        ),
        (
            status
                .ephemeral_container_statuses
                .as_deref()
                .unwrap_or_default(),
            &ephemeral,
        ),
    ];
    let mut seen = BTreeSet::new();
    let mut out = vec![];
    for (statuses, containers) in groups {
        for cs in statuses {
            let Some(reason) = cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .filter(|r| NOT_LOADED_REASONS.contains(r))
            else {
                continue;
            };
            // The spec is what the user wrote; the status may be normalized.
            let image = spec_image(containers, &cs.name).unwrap_or_else(|| cs.image.clone());
            if image.is_empty() || !seen.insert(image.clone()) {
                continue;
            }
            out.push(Hint {
                image,
                container: cs.name.clone(),
                reason: reason.to_string(),
            });
        }
    }
    out
}

/// Which (pod uid, image) pairs were already hinted. Synchronous, no I/O.
#[derive(Debug, Default)]
pub(crate) struct Hinted {
    seen: HashSet<(String, String)>,
}

impl Hinted {
    /// The hints of `pod` not given before; they count as given from now on.
    pub(crate) fn apply(&mut self, pod: &Pod) -> Vec<Hint> {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return vec![];
        };
        hints(pod)
            .into_iter()
            .filter(|h| self.seen.insert((uid.to_string(), h.image.clone())))
            .collect()
    }

    /// Forgets a deleted pod.
    pub(crate) fn delete(&mut self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.seen.retain(|(u, _)| u != uid);
        }
    }

    /// Forgets pods that are gone after a re-list; returns the hints of the list.
    pub(crate) fn reset(&mut self, pods: &[Pod]) -> Vec<(usize, Hint)> {
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.seen.retain(|(u, _)| live.contains(u.as_str()));
        pods.iter()
            .enumerate()
            .flat_map(|(i, p)| self.apply(p).into_iter().map(move |h| (i, h)))
            .collect()
    }
}

/// Watches every Pod and hands hints to the writer. Ends only when the
/// writer is gone.
pub(crate) async fn watch_pods(
    client: Client,
    writer: mpsc::Sender<Command>,
    synced: watch::Sender<bool>,
    metrics: Metrics,
) {
    let api: Api<Pod> = Api::all(client);
    let mut updates = std::pin::pin!(tandem_runtime::watch::stream(
        api,
        watcher::Config::default()
    ));
    let mut hinted = Hinted::default();
    let span = tracing::info_span!("images");
    while let Some(update) = updates.next().instrument(span.clone()).await {
        let found: Vec<(Pod, Hint)> = {
            let _span = span.enter();
            match update {
                Update::Listed(pods) => {
                    let found = hinted
                        .reset(&pods)
                        .into_iter()
                        .map(|(i, h)| (pods[i].clone(), h))
                        .collect();
                    synced.send_replace(true);
                    tracing::info!(pods = pods.len(), "pods synced");
                    found
                }
                Update::Apply(p) => {
                    let hints = hinted.apply(&p);
                    hints.into_iter().map(|h| (p.clone(), h)).collect()
                }
                Update::Delete(p) => {
                    hinted.delete(&p);
                    continue;
                }
                Update::Failed(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    continue;
                }
            }
        };
        for (pod, hint) in found {
            span.in_scope(|| {
                tracing::info!(
                    namespace = pod.namespace().unwrap_or_default(),
                    pod = pod.name_any(),
                    container = %hint.container,
                    image = %hint.image,
                    reason = %hint.reason,
                    "image not loaded"
                )
            });
            metrics.image_hints.inc();
            let command = Command::Event {
                reference: pod.object_ref(&()),
                note: Note::warning(REASON, "CheckImage", hint.note()),
            };
            if writer.send(command).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting, EphemeralContainer, PodSpec,
        PodStatus,
    };

    use super::*;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Container::default()
        }
    }

    fn waiting(name: &str, image: &str, reason: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: image.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("...".into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn running(name: &str, image: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: image.into(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn mk_pod(
        uid: &str,
        containers: Vec<Container>,
        init: Vec<Container>,
        statuses: Vec<ContainerStatus>,
        init_statuses: Vec<ContainerStatus>,
    ) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(statuses),
                init_container_statuses: Some(init_statuses),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        pod.metadata.uid = Some(uid.into());
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod
    }

    fn hint(image: &str, container: &str, reason: &str) -> Hint {
        Hint {
            image: image.into(),
            container: container.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn which_pods_get_hints() {
        let img = "tandem.local/web:1";
        let other = "tandem.local/sidecar:2";
        let mut ephemeral = mk_pod("u", vec![container("app", img)], vec![], vec![], vec![]);
        let spec = ephemeral.spec.as_mut().unwrap();
        spec.ephemeral_containers = Some(vec![EphemeralContainer {
            name: "debug".into(),
            image: Some("tandem.local/debug:1".into()),
            ..EphemeralContainer::default()
        }]);
        ephemeral
            .status
            .as_mut()
            .unwrap()
            .ephemeral_container_statuses = Some(vec![waiting(
            "debug",
            "tandem.local/debug:1",
            "ErrImageNeverPull",
        )]);

        let cases: Vec<(&str, Pod, Vec<Hint>)> = vec![
            (
                "never pull",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("app", img, "ErrImageNeverPull")],
                    vec![],
                ),
                vec![hint(img, "app", "ErrImageNeverPull")],
            ),
            (
                "pull error",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("app", img, "ErrImagePull")],
                    vec![],
                ),
                vec![hint(img, "app", "ErrImagePull")],
            ),
            (
                "pull back-off",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("app", img, "ImagePullBackOff")],
                    vec![],
                ),
                vec![hint(img, "app", "ImagePullBackOff")],
            ),
            (
                "waiting for another reason",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("app", img, "ContainerCreating")],
                    vec![],
                ),
                vec![],
            ),
            (
                "crash loop is not an image problem",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("app", img, "CrashLoopBackOff")],
                    vec![],
                ),
                vec![],
            ),
            (
                "running",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![running("app", img)],
                    vec![],
                ),
                vec![],
            ),
            (
                "no status yet",
                Pod {
                    status: None,
                    ..mk_pod("u", vec![container("app", img)], vec![], vec![], vec![])
                },
                vec![],
            ),
            (
                "the spec's reference wins over the status's",
                mk_pod(
                    "u",
                    vec![container("app", "web:1")],
                    vec![],
                    vec![waiting(
                        "app",
                        "docker.io/library/web:1",
                        "ErrImageNeverPull",
                    )],
                    vec![],
                ),
                vec![hint("web:1", "app", "ErrImageNeverPull")],
            ),
            (
                "a status for a container the spec lacks keeps its own image",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![],
                    vec![waiting("ghost", other, "ErrImageNeverPull")],
                    vec![],
                ),
                vec![hint(other, "ghost", "ErrImageNeverPull")],
            ),
            (
                "two containers, one image: one hint",
                mk_pod(
                    "u",
                    vec![container("a", img), container("b", img)],
                    vec![],
                    vec![
                        waiting("a", img, "ErrImageNeverPull"),
                        waiting("b", img, "ErrImageNeverPull"),
                    ],
                    vec![],
                ),
                vec![hint(img, "a", "ErrImageNeverPull")],
            ),
            (
                "init container first, then the rest",
                mk_pod(
                    "u",
                    vec![container("app", img)],
                    vec![container("setup", other)],
                    vec![waiting("app", img, "ErrImageNeverPull")],
                    vec![waiting("setup", other, "ErrImageNeverPull")],
                ),
                vec![
                    hint(other, "setup", "ErrImageNeverPull"),
                    hint(img, "app", "ErrImageNeverPull"),
                ],
            ),
            (
                "ephemeral container",
                ephemeral,
                vec![hint("tandem.local/debug:1", "debug", "ErrImageNeverPull")],
            ),
        ];
        for (case, pod, want) in cases {
            assert_eq!(hints(&pod), want, "{case}");
        }
    }

    #[test]
    fn the_note_names_both_commands() {
        let note = hint("tandem.local/web:1", "app", "ErrImageNeverPull").note();
        assert_eq!(
            note,
            "image tandem.local/web:1 is not loaded on the testbed's nodes (they never pull): \
             build an archive and run `tandem testbed load ARCHIVE`, or \
             `tandem testbed load --binary PATH --as tandem.local/web:1`"
        );
    }

    #[test]
    fn each_pod_and_image_is_hinted_once() {
        let img = "tandem.local/web:1";
        let pod = |uid: &str, reason: &str| {
            mk_pod(
                uid,
                vec![container("app", img)],
                vec![],
                vec![waiting("app", img, reason)],
                vec![],
            )
        };
        let mut hinted = Hinted::default();
        assert_eq!(hinted.apply(&pod("u1", "ErrImagePull")).len(), 1);
        // The kubelet moves between pull reasons: still the same hint.
        assert!(hinted.apply(&pod("u1", "ImagePullBackOff")).is_empty());
        assert!(hinted.apply(&pod("u1", "ErrImagePull")).is_empty());
        // Another pod (a new uid, even under the same name) is hinted.
        assert_eq!(hinted.apply(&pod("u2", "ErrImagePull")).len(), 1);
        // A pod without a uid cannot be tracked: no hint.
        let mut no_uid = pod("x", "ErrImagePull");
        no_uid.metadata.uid = None;
        assert!(hinted.apply(&no_uid).is_empty());
        // Deleted, then listed again: hinted again (a new pod for the user).
        hinted.delete(&pod("u1", "ErrImagePull"));
        assert_eq!(hinted.apply(&pod("u1", "ErrImagePull")).len(), 1);
        // A re-list forgets pods that are gone and hints only what is new.
        let listed = hinted.reset(&[pod("u2", "ErrImagePull"), pod("u3", "ErrImagePull")]);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, 1, "u3 is new");
        assert_eq!(hinted.seen.len(), 2, "u1 is forgotten");
    }
}
