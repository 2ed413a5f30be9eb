//! `tandem certificate`: the workshop's `step certificate`, built in.
//!
//! Files in, files out; every decision is in `tandem-identity`.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use tandem_identity as identity;
use tandem_identity::time::OffsetDateTime;

/// Create, inspect and verify certificates.
#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Create a certificate and its private key, as `step certificate create`
    ///
    /// The workshop's trust anchor and a cluster issuer:
    ///
    ///   tandem certificate create root.linkerd.cluster.local root.crt root.key
    ///     --profile root-ca --no-password --insecure
    ///
    ///   tandem certificate create identity.linkerd.cluster.local east-issuer.crt
    ///     east-issuer.key --profile intermediate-ca --ca root.crt --ca-key root.key
    ///     --not-after 8760h --no-password --insecure
    #[command(verbatim_doc_comment)]
    // Boxed: the create flags are far larger than the other variants.
    Create(Box<CreateArgs>),
    /// Print a certificate's subject, issuer, validity, key, CA flags,
    /// usages, SANs and key identifiers.
    Inspect(InspectArgs),
    /// Verify that a certificate chains up to one of the given roots.
    ///
    /// Checks signatures, validity windows, CA flags, keyCertSign and pathlen
    /// constraints. Prints one "ok" line, or fails with the reason.
    Verify(VerifyArgs),
}

/// The certificate profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Self-signed CA, pathlen 1, keyUsage certSign and cRLSign; 10 years by default.
    RootCa,
    /// CA signed by --ca, pathlen 0, keyUsage certSign and cRLSign; 10 years by default.
    IntermediateCa,
    /// Not a CA; digitalSignature, serverAuth and clientAuth; 24 hours by default.
    Leaf,
}

/// The key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KtyArg {
    /// Elliptic curve (ECDSA).
    #[value(name = "EC")]
    Ec,
    /// RSA.
    #[value(name = "RSA")]
    Rsa,
}

/// The elliptic curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrvArg {
    /// NIST P-256.
    #[value(name = "P-256")]
    P256,
    /// NIST P-384.
    #[value(name = "P-384")]
    P384,
}

/// The arguments of `tandem certificate create` (step's names and defaults).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The subject's common name (also the DNS SAN of a leaf without --san).
    subject: String,
    /// Where to write the certificate (PEM).
    crt: PathBuf,
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    key: PathBuf,

    /// The certificate profile.
    #[arg(long, value_enum, default_value = "leaf")]
    profile: ProfileArg,

    /// The signing CA's certificate (needed for intermediate-ca and leaf).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The signing CA's private key (PKCS#8, SEC1 or PKCS#1 PEM, or encrypted PKCS#8).
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// A file holding the password of an encrypted --ca-key.
    #[arg(long, value_name = "FILE")]
    ca_password_file: Option<PathBuf>,

    /// Start of validity: a duration from now (-5m, 1h30m) or an RFC 3339
    /// time (2030-01-01T00:00:00Z). Default: now.
    #[arg(long, value_name = "TIME|DURATION", allow_hyphen_values = true)]
    not_before: Option<identity::TimeSpec>,
    /// End of validity: a duration from now (8760h, 30m, 90s, 1h30m) or an
    /// RFC 3339 time. Default: 10 years for CAs, 24 hours for leaves, cut to
    /// the signing CA's expiry. A value beyond the signing CA's expiry is
    /// refused: a certificate may not outlive its issuer.
    #[arg(long, value_name = "TIME|DURATION", allow_hyphen_values = true)]
    not_after: Option<identity::TimeSpec>,

    /// The key type.
    #[arg(long, value_enum, default_value = "EC", ignore_case = true)]
    kty: KtyArg,
    /// The curve, for --kty EC.
    #[arg(long, value_enum, ignore_case = true)]
    crv: Option<CrvArg>,
    /// The RSA key size in bits, for --kty RSA (at least 2048) [default: 2048].
    #[arg(long, value_name = "BITS")]
    size: Option<u32>,

    /// A subject alternative name; repeat for several. An IP address becomes
    /// an IP SAN, anything else a DNS SAN.
    #[arg(long, value_name = "NAME")]
    san: Vec<String>,

    /// Write the private key unencrypted (needs --insecure too).
    #[arg(long, conflicts_with = "password_file")]
    no_password: bool,
    /// Confirm --no-password.
    #[arg(long)]
    insecure: bool,
    /// Encrypt the private key with the password in FILE (first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Overwrite CRT and KEY if they exist.
    #[arg(long, short = 'f')]
    force: bool,
}

/// The output format of `inspect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// A short report for people.
    #[default]
    Text,
    /// JSON for scripts (stable field names).
    Json,
}

/// The arguments of `tandem certificate inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The certificate file (PEM).
    crt: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value = "text")]
    format: InspectFormat,
    /// Inspect every certificate in the file, not only the first.
    #[arg(long)]
    bundle: bool,
}

/// The arguments of `tandem certificate verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate to verify (PEM); further certificates in the file are
    /// used as intermediates.
    crt: PathBuf,
    /// The trusted root certificates (PEM bundle).
    #[arg(long, value_name = "FILE")]
    roots: PathBuf,
}

/// Runs a `tandem certificate` command.
pub fn run(cmd: CertificateCommand) -> Result<ExitCode> {
    match cmd {
        CertificateCommand::Create(args) => create(*args),
        CertificateCommand::Inspect(args) => inspect(args),
        CertificateCommand::Verify(args) => verify(args),
    }
}

// === create ===

/// How the new key is written.
enum KeyProtection {
    Clear,
    Password(Vec<u8>),
}

fn create(args: CreateArgs) -> Result<ExitCode> {
    // Everything that can be refused is refused before a key is generated
    // or a file is touched.
    let protection = key_protection(&args)?;
    let key_type = key_type(&args)?;
    let profile = match args.profile {
        ProfileArg::RootCa => identity::Profile::RootCa,
        ProfileArg::IntermediateCa => identity::Profile::IntermediateCa,
        ProfileArg::Leaf => identity::Profile::Leaf,
    };
    if args.crt == args.key {
        bail!(
            "the certificate and the key would both be written to {}",
            args.crt.display()
        );
    }
    if !args.force {
        for path in [&args.crt, &args.key] {
            if path.symlink_metadata().is_ok() {
                bail!(
                    "{} already exists; give --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    if profile == identity::Profile::RootCa && (args.ca.is_some() || args.ca_key.is_some()) {
        return Err(identity::Error::CaNotAllowed.into());
    }
    let ca = match (&args.ca, &args.ca_key) {
        (None, None) => None,
        (Some(_), None) => bail!("--ca needs --ca-key, the CA's private key"),
        (None, Some(_)) => bail!("--ca-key needs --ca, the CA's certificate"),
        (Some(cert), Some(key)) => Some(identity::CaInput {
            cert_pem: read(cert, "--ca")?,
            key_pem: read(key, "--ca-key")?,
            key_password: match &args.ca_password_file {
                Some(f) => Some(read_password(f, "--ca-password-file")?),
                None => None,
            },
            cert_name: cert.display().to_string(),
            key_name: key.display().to_string(),
        }),
    };
    let req = identity::CreateRequest {
        subject: args.subject.clone(),
        profile,
        key_type,
        sans: args.san.clone(),
        not_before: args.not_before,
        not_after: args.not_after,
        ca,
        now: OffsetDateTime::now_utc(),
    };
    let created = identity::create(&req).map_err(hint_encrypted_ca)?;
    let key_pem = match protection {
        KeyProtection::Clear => created.key_pem,
        KeyProtection::Password(pw) => identity::encrypt_key(&created.key_pem, pw)?,
    };

    // The key first: if the certificate cannot be written, remove the key
    // again, so that a failed run leaves nothing behind.
    write_new(&args.key, key_pem.as_bytes(), 0o600, args.force)?;
    if let Err(e) = write_new(&args.crt, created.cert_pem.as_bytes(), 0o644, args.force) {
        let _ = fs::remove_file(&args.key);
        return Err(e);
    }
    println!("Your certificate has been saved in {}.", args.crt.display());
    println!("Your private key has been saved in {}.", args.key.display());
    Ok(ExitCode::SUCCESS)
}

fn key_protection(args: &CreateArgs) -> Result<KeyProtection> {
    match (&args.password_file, args.no_password, args.insecure) {
        (Some(f), _, _) => Ok(KeyProtection::Password(read_password(
            f,
            "--password-file",
        )?)),
        (None, true, true) => Ok(KeyProtection::Clear),
        (None, true, false) => bail!(
            "--no-password needs --insecure too: give --no-password --insecure to write the \
             key unencrypted, or --password-file FILE to encrypt it"
        ),
        (None, false, _) => bail!(
            "refusing to write an unencrypted private key: give --no-password --insecure to \
             write it unencrypted, or --password-file FILE to encrypt it"
        ),
    }
}

fn key_type(args: &CreateArgs) -> Result<identity::KeyType> {
    Ok(match args.kty {
        KtyArg::Ec => {
            if args.size.is_some() {
                bail!("--size is for --kty RSA; for --kty EC choose --crv P-256 or P-384");
            }
            identity::KeyType::Ec(match args.crv {
                None | Some(CrvArg::P256) => identity::Curve::P256,
                Some(CrvArg::P384) => identity::Curve::P384,
            })
        }
        KtyArg::Rsa => {
            if args.crv.is_some() {
                bail!("--crv is for --kty EC; for --kty RSA choose --size");
            }
            let bits = args.size.unwrap_or(2048);
            if bits < 2048 {
                bail!("--size {bits} is refused: RSA keys need at least 2048 bits");
            }
            identity::KeyType::Rsa { bits }
        }
    })
}

/// Points at --ca-password-file when the CA key turns out to be encrypted.
fn hint_encrypted_ca(e: identity::Error) -> anyhow::Error {
    match e {
        identity::Error::KeyEncrypted { .. } => {
            anyhow::Error::new(e).context("give its password with --ca-password-file FILE")
        }
        e => e.into(),
    }
}

/// Creates `path` with `mode`; with `force`, replaces what is there.
///
/// The file is created with its mode rather than chmod-ed later, so a key is
/// never readable by others, not even for a moment. A file to replace is
/// removed first, because opening an existing file keeps its old mode.
fn write_new(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<()> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            if path.exists() {
                format!(
                    "{} already exists; give --force to overwrite it",
                    path.display()
                )
            } else {
                format!("cannot create {}", path.display())
            }
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

// === inspect ===

fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let pem = read(&args.crt, "certificate")?;
    let name = args.crt.display().to_string();
    let infos = if args.bundle {
        identity::inspect_bundle(&pem).with_context(|| name.clone())?
    } else {
        vec![identity::inspect(&pem).with_context(|| name.clone())?]
    };
    match args.format {
        InspectFormat::Text => {
            let texts: Vec<String> = infos.iter().map(|i| i.to_text()).collect();
            print!("{}", texts.join("\n"));
        }
        InspectFormat::Json => {
            let json = if args.bundle {
                serde_json::to_string_pretty(&infos)?
            } else {
                serde_json::to_string_pretty(&infos[0])?
            };
            println!("{json}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === verify ===

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let crt = read(&args.crt, "certificate")?;
    let roots = read(&args.roots, "--roots")?;
    let (crt_name, roots_name) = (
        args.crt.display().to_string(),
        args.roots.display().to_string(),
    );
    let report = identity::verify_chain_report(
        &crt_name,
        &crt,
        &roots_name,
        &roots,
        OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("{crt_name} does not verify against {roots_name}"))?;
    println!(
        "ok: {crt_name} is valid: {} (valid until {})",
        report.chain.join(" <- "),
        identity::fmt_time(report.expires)
    );
    Ok(ExitCode::SUCCESS)
}

// === files ===

/// Reads a PEM file, naming the flag and the path when that fails.
fn read(path: &Path, what: &str) -> Result<String> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read {what} file {}", path.display()))?;
    // Not UTF-8 is not PEM; say so precisely rather than "invalid UTF-8".
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not PEM: it holds binary data (DER? convert it with `openssl x509 -inform der`)",
            path.display()
        )
    })
}

/// Reads a password file: its first line, without the line ending.
fn read_password(path: &Path, what: &str) -> Result<Vec<u8>> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read {what} file {}", path.display()))?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        bail!("{what} file {} holds an empty password", path.display());
    }
    Ok(line.to_vec())
}
