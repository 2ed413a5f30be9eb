//! What the `tandem` binary and its development tools share: the cluster
//! flags, output formats, signals and the process entry point.
//!
//! The product binary is `tandem` (what the image holds). The development
//! tools are separate binaries of this package, `tandem-testbed` and
//! `tandem-demo`, which `tandem testbed ...` and `tandem demo ...` run, as
//! git runs its subcommands: the image carries none of their code.

#![forbid(unsafe_code)]

pub mod dev_tools;
pub mod entry;
pub mod gateway;
pub mod kube_client;
pub mod output;
pub mod signal;
