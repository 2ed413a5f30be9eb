//! A pod's network namespace entered from the test process, and a load
//! generator that runs in it.
//!
//! A thread that entered the namespace (`setns`) opens its sockets there,
//! so its connections go through the pod's own nat rules: to its proxy's
//! outbound port, as the pod's app's would (the thread runs as root, not as
//! the proxy's uid 2102). No image and no `kubectl exec` are involved.

use std::{
    fs::File,
    future::Future,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

use crate::{http, run_ok};

// === PodNetns ===

/// A pod's network namespace, held open by a file of `/proc/<pid>/ns/net`.
pub struct PodNetns {
    file: File,
    /// The process of the pod it was found through.
    pub pid: u32,
}

impl PodNetns {
    /// The namespace of the pod with uid `pod_uid`, found through its
    /// processes in the node's cgroups under `cgroup_root`.
    pub fn of_pod(cgroup_root: &str, pod_uid: &str) -> Result<Self, String> {
        let host = std::fs::read_link("/proc/self/ns/net")
            .map_err(|e| format!("reading this process's namespace: {e}"))?;
        let mut pids = container_pids(cgroup_root, &pod_uid.replace('-', "_"));
        if pids.is_empty() {
            pids = container_pids(cgroup_root, pod_uid);
        }
        for pid in &pids {
            let path = format!("/proc/{pid}/ns/net");
            if std::fs::read_link(&path).is_ok_and(|ns| ns != host)
                && let Ok(file) = File::open(&path)
            {
                return Ok(PodNetns { file, pid: *pid });
            }
        }
        Err(format!(
            "no process of pod {pod_uid} in a network namespace of its own \
             (pids {pids:?} in the cgroups under {cgroup_root}; this needs root)"
        ))
    }

    /// Runs `f` on a single-threaded runtime, on a thread of its own that
    /// entered the namespace.
    pub fn spawn<F, Fut, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let file = self
            .file
            .try_clone()
            .expect("the namespace's file can be duplicated");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering the pod's network namespace: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(f())
        })
    }

    /// [`Self::spawn`], waited for.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.spawn(f)
            .join()
            .expect("the thread in the pod's namespace panicked")
    }

    /// One GET from inside the pod.
    pub fn get(&self, addr: SocketAddr, path: &str) -> Result<http::Response, String> {
        let path = path.to_string();
        self.run(move || async move { http::get(addr, &path).await.map_err(|e| e.to_string()) })
    }

    /// The namespace's TCP `ListenOverflows` and `ListenDrops` counters: SYNs
    /// dropped because a listener's accept queue was full.
    pub fn listen_drops(&self) -> Result<(u64, u64), String> {
        let path = format!("/proc/{}/net/netstat", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let mut tcp = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
            return Err(format!("no TcpExt in {path}"));
        };
        let get = |want: &str| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == want)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((get("ListenOverflows"), get("ListenDrops")))
    }

    /// `iptables-nft-save -t nat` run in the pod's namespace (a child
    /// started by a thread inherits that thread's namespace).
    pub fn nat_rules(&self) -> String {
        self.run(|| async { run_ok(Command::new("iptables-nft-save").args(["-t", "nat"])) })
    }
}

/// Pids of a pod's containers, from the node's cgroups on the host.
pub fn container_pids(cgroup_root: &str, pod_uid: &str) -> Vec<u32> {
    let dir = Path::new("/sys/fs/cgroup/pids").join(cgroup_root);
    let needle = format!("pod{pod_uid}");
    let mut out = vec![];
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                if p.to_string_lossy().contains(&needle)
                    && let Ok(procs) = std::fs::read_to_string(p.join("cgroup.procs"))
                {
                    out.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
                }
                stack.push(p);
            }
        }
    }
    out
}

// === Load ===

/// What to send: `count` GETs of `path` to `target`, `rate` per second.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub path: String,
    pub rate: u32,
    pub count: u32,
}

/// What came of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered { status: u16, body: String },
    Failed(String),
}

/// One request: when it was sent, how long it took, and its outcome.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Sample {
    /// Which backend answered: the body of a 200 (a backend's pod name).
    pub fn backend(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answered { status: 200, body } => Some(body.trim()),
            _ => None,
        }
    }

    /// Not a 200.
    pub fn failed(&self) -> bool {
        self.backend().is_none()
    }
}

/// Requests at a fixed rate from a pod's namespace; each runs on its own
/// connection, within [`http::TIMEOUT`].
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    pub started: Instant,
}

impl Load {
    /// Starts sending.
    pub fn start(netns: &PodNetns, spec: LoadSpec) -> Load {
        assert!(spec.rate > 0, "a load needs a rate");
        let samples = Arc::new(Mutex::new(Vec::with_capacity(spec.count as usize)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = netns.spawn(move || send(spec, s, st));
        Load {
            samples,
            stop,
            thread,
            started: Instant::now(),
        }
    }

    /// The answers so far, in the order they were sent.
    pub fn samples(&self) -> Vec<Sample> {
        let mut v = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by_key(|s| s.sent);
        v
    }

    /// Waits until every request was sent and answered.
    pub fn finish(self) -> Vec<Sample> {
        self.thread
            .join()
            .expect("the load generator's thread panicked");
        let samples = Arc::try_unwrap(self.samples)
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_else(|a| a.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let mut v = samples;
        v.sort_by_key(|s| s.sent);
        v
    }

    /// Sends no more requests; waits for those in flight.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.finish()
    }
}

async fn send(spec: LoadSpec, samples: Arc<Mutex<Vec<Sample>>>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / spec.rate);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.count {
        tick.tick().await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (samples, path) = (samples.clone(), spec.path.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = match http::get(spec.target, &path).await {
                Ok(r) => Outcome::Answered {
                    status: r.status,
                    body: r.body,
                },
                Err(e) => Outcome::Failed(e.to_string()),
            };
            let latency = sent.elapsed();
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Sample {
                    sent,
                    latency,
                    outcome,
                });
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Requests per backend, by the prefix of the answering pod's name (its
/// Deployment's name and a dash); failures under `"failed"`.
pub fn count_by(
    samples: &[Sample],
    prefixes: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for s in samples {
        let key = match s.backend() {
            None => "failed".to_string(),
            Some(pod) => prefixes
                .iter()
                .find(|p| pod.starts_with(&format!("{p}-")))
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("other:{pod}")),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: Outcome) -> Sample {
        Sample {
            sent: Instant::now(),
            latency: Duration::ZERO,
            outcome,
        }
    }

    #[test]
    fn answers_are_counted_by_deployment_and_failures_apart() {
        let ok = |body: &str| {
            sample(Outcome::Answered {
                status: 200,
                body: body.into(),
            })
        };
        let samples = [
            ok("b1-6c9f-abcde\n"),
            ok("b1-6c9f-fghij\n"),
            ok("b2-77d4-klmno\n"),
            ok("b10-1-2"),
            sample(Outcome::Answered {
                status: 502,
                body: "b1-6c9f-abcde".into(),
            }),
            sample(Outcome::Failed("reset".into())),
        ];
        let got = count_by(&samples, &["b1", "b2"]);
        let want: Vec<(String, usize)> = vec![
            ("b1".into(), 2),
            ("b2".into(), 1),
            ("failed".into(), 2),
            ("other:b10-1-2".into(), 1),
        ];
        assert_eq!(got.into_iter().collect::<Vec<_>>(), want);
    }
}
