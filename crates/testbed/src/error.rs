use std::path::{Path, PathBuf};

/// What can go wrong with a testbed. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidConfig(String),

    #[error("unknown cluster {name:?}: this testbed has {}", known.join(", "))]
    UnknownCluster { name: String, known: Vec<String> },

    #[error(
        "port {port} on 127.0.0.1 is already in use; the testbed needs it for {component} of cluster {cluster}.\n  Stop whatever listens there, or start the testbed on other ports with --base-port (each cluster takes 10 ports)"
    )]
    PortInUse {
        port: u16,
        component: String,
        cluster: String,
    },

    #[error(
        "the Go toolchain was not found ({looked_for}).\n  The testbed builds kube-apiserver, etcd and kwok from Go modules and needs Go 1.26 or newer.\n  Install Go (https://go.dev/doc/install) and put it on PATH, or set TANDEM_GO to the go binary"
    )]
    GoMissing { looked_for: String },

    #[error("building {what} failed:\n{detail}")]
    BuildFailed { what: String, detail: String },

    #[error("{dir}: {detail}", dir = dir.display())]
    StaleState { dir: PathBuf, detail: String },

    #[error("{dir} is in use by another tandem testbed command; wait for it to finish", dir = dir.display())]
    Busy { dir: PathBuf },

    #[error("no testbed in {dir}: start one with `tandem testbed up --dir {dir}`", dir = dir.display())]
    NotFound { dir: PathBuf },

    #[error("{component} of cluster {cluster} did not become healthy: {detail}\n--- last lines of {log} ---\n{log_tail}", log = log.display())]
    ComponentFailed {
        cluster: String,
        component: String,
        detail: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error("cluster {cluster}: {detail}")]
    Cluster { cluster: String, detail: String },

    #[error("could not stop process {pid}")]
    StopFailed { pid: u32 },

    #[error("certificates: {0}")]
    Pki(String),

    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("interrupted")]
    Interrupted,

    #[error("real nodes need {missing}: {fix}")]
    Prerequisite { missing: String, fix: String },

    #[error("setting up the nodes' network failed at `{step}`: {detail}")]
    Network { step: String, detail: String },

    #[error("teardown failed while {step}: {detail}")]
    Teardown { step: String, detail: String },

    #[error("image {reference}: {detail}")]
    Image { reference: String, detail: String },

    #[error("{path} is dynamically linked, but the image {image} has no shared libraries for it.\n  {fix}", path = path.display())]
    NotStatic {
        path: PathBuf,
        image: String,
        fix: String,
    },

    #[error("{path}: {detail}; an image needs an x86-64 Linux (ELF) executable", path = path.display())]
    NotExecutable { path: PathBuf, detail: String },

    #[error("finding the shared libraries of {binary} with ldd failed: {detail}\n  Install ldd (Debian package libc-bin) and the missing libraries, or give a statically linked binary", binary = binary.display())]
    Ldd { binary: PathBuf, detail: String },

    #[error("`{command}` failed: {detail}")]
    Ctr { command: String, detail: String },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
