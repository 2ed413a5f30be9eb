//! `tandem certificate`: the workshop's `step certificate`, built in.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {}

pub fn run(cmd: CertificateCommand) -> Result<ExitCode> {
    match cmd {}
}
