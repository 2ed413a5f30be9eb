//! `inspect`: a certificate's fields, for people (text) and scripts (JSON).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::cert::{self, Cert};
use crate::{Error, fmt_time};

/// The fields of one certificate. Field names are stable: scripts read the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject, as "CN=..., O=...".
    pub subject: String,
    /// The subject's first common name, if any.
    pub common_name: Option<String>,
    /// The issuer, as "CN=...".
    pub issuer: String,
    /// The serial number, lowercase hex with no leading zeros.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// "ECDSA P-256", "ECDSA P-384", "RSA 2048", ...
    pub key_algorithm: String,
    /// The public key's size in bits (0 when unknown).
    pub key_bits: usize,
    /// "ECDSA-SHA256", "SHA256-RSA", ...
    pub signature_algorithm: String,
    /// The basicConstraints cA flag.
    pub is_ca: bool,
    /// The pathLenConstraint of a CA, if set.
    pub path_len: Option<u32>,
    /// Key usages by their RFC 5280 names: digitalSignature, keyEncipherment, keyCertSign, cRLSign, ...
    pub key_usage: Vec<String>,
    /// Extended key usages: serverAuth, clientAuth, ..., or dotted OIDs.
    pub ext_key_usage: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// SubjectKeyIdentifier, lowercase hex.
    pub subject_key_id: Option<String>,
    /// AuthorityKeyIdentifier's keyIdentifier, lowercase hex.
    pub authority_key_id: Option<String>,
    /// Issuer equals subject and the certificate's own key verifies its signature.
    pub self_signed: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
}

/// The fields of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<CertInfo, Error> {
    let ders = cert::load_der("certificate", pem)?;
    let cert = Cert::parse("certificate", 1, &ders[0])?;
    Ok(info(&cert))
}

/// The fields of every certificate in `pem`, in order.
pub fn inspect_bundle(pem: &str) -> Result<Vec<CertInfo>, Error> {
    let ders = cert::load_der("certificate", pem)?;
    Ok(cert::parse_all("certificate", &ders)?
        .iter()
        .map(info)
        .collect())
}

pub(crate) fn info(c: &Cert<'_>) -> CertInfo {
    let x = &c.x;
    let key_alg = c.key_alg();
    let mut key_usage = Vec::new();
    if let Ok(Some(ku)) = x.key_usage() {
        let ku = ku.value;
        for (set, name) in [
            (ku.digital_signature(), "digitalSignature"),
            (ku.non_repudiation(), "nonRepudiation"),
            (ku.key_encipherment(), "keyEncipherment"),
            (ku.data_encipherment(), "dataEncipherment"),
            (ku.key_agreement(), "keyAgreement"),
            (ku.key_cert_sign(), "keyCertSign"),
            (ku.crl_sign(), "cRLSign"),
            (ku.encipher_only(), "encipherOnly"),
            (ku.decipher_only(), "decipherOnly"),
        ] {
            if set {
                key_usage.push(name.to_string());
            }
        }
    }
    let mut ext_key_usage = Vec::new();
    if let Ok(Some(eku)) = x.extended_key_usage() {
        let eku = eku.value;
        for (set, name) in [
            (eku.any, "anyExtendedKeyUsage"),
            (eku.server_auth, "serverAuth"),
            (eku.client_auth, "clientAuth"),
            (eku.code_signing, "codeSigning"),
            (eku.email_protection, "emailProtection"),
            (eku.time_stamping, "timeStamping"),
            (eku.ocsp_signing, "OCSPSigning"),
        ] {
            if set {
                ext_key_usage.push(name.to_string());
            }
        }
        ext_key_usage.extend(eku.other.iter().map(|o| o.to_id_string()));
    }
    let (mut dns_names, mut ip_addresses, mut uris, mut emails) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                GeneralName::IPAddress(b) => ip_addresses.push(ip_string(b)),
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                _ => {}
            }
        }
    }
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(hex(id.0)),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| hex(id.0));
            }
            _ => {}
        }
    }
    let common_name = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let serial = hex(x.raw_serial());
    let serial = serial.trim_start_matches('0');
    CertInfo {
        subject: c.subject(),
        common_name,
        issuer: c.issuer(),
        serial: if serial.is_empty() { "0" } else { serial }.to_string(),
        not_before: c.not_before(),
        not_after: c.not_after(),
        key_algorithm: key_alg.to_string(),
        key_bits: key_alg.bits(),
        signature_algorithm: signature_name(&x.signature_algorithm.algorithm.to_id_string()),
        is_ca: c.is_ca(),
        path_len: c.path_len(),
        key_usage,
        ext_key_usage,
        dns_names,
        ip_addresses,
        uris,
        emails,
        subject_key_id,
        authority_key_id,
        self_signed: c.is_self_issued() && c.signed_by(c),
        fingerprint_sha256: hex(ring::digest::digest(&ring::digest::SHA256, c.der).as_ref()),
    }
}

fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256",
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384",
        "1.2.840.10045.4.3.4" => "ECDSA-SHA512",
        "1.2.840.113549.1.1.5" => "SHA1-RSA",
        "1.2.840.113549.1.1.11" => "SHA256-RSA",
        "1.2.840.113549.1.1.12" => "SHA384-RSA",
        "1.2.840.113549.1.1.13" => "SHA512-RSA",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        "1.3.101.112" => "Ed25519",
        other => return other.to_string(),
    }
    .to_string()
}

fn ip_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let b: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            IpAddr::from(b).to_string()
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(bytes);
            IpAddr::from(b).to_string()
        }
        _ => format!("(invalid IP of {} bytes)", bytes.len()),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn human_key_usage(name: &str) -> &str {
    match name {
        "digitalSignature" => "Digital Signature",
        "nonRepudiation" => "Non Repudiation",
        "keyEncipherment" => "Key Encipherment",
        "dataEncipherment" => "Data Encipherment",
        "keyAgreement" => "Key Agreement",
        "keyCertSign" => "Certificate Sign",
        "cRLSign" => "CRL Sign",
        "encipherOnly" => "Encipher Only",
        "decipherOnly" => "Decipher Only",
        other => other,
    }
}

impl CertInfo {
    /// "root CA", "intermediate CA" or "leaf".
    pub fn kind(&self) -> &'static str {
        match (self.is_ca, self.self_signed) {
            (true, true) => "root CA",
            (true, false) => "intermediate CA",
            (false, _) => "leaf",
        }
    }

    /// A short human-readable report, in the manner of `step certificate inspect --short`
    /// with the extensions that matter for a trust chain.
    pub fn to_text(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        let ca = match (self.is_ca, self.path_len) {
            (true, Some(n)) => format!("yes, pathlen {n}"),
            (true, None) => "yes, no pathlen limit".into(),
            (false, _) => "no".into(),
        };
        let mut sans: Vec<String> = Vec::new();
        sans.extend(self.dns_names.iter().map(|n| format!("DNS:{n}")));
        sans.extend(self.ip_addresses.iter().map(|n| format!("IP:{n}")));
        sans.extend(self.uris.iter().map(|n| format!("URI:{n}")));
        sans.extend(self.emails.iter().map(|n| format!("email:{n}")));
        let ku: Vec<String> = self
            .key_usage
            .iter()
            .map(|k| human_key_usage(k).to_string())
            .collect();
        let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let rows = [
            ("Subject", self.subject.clone()),
            ("Issuer", self.issuer.clone()),
            ("Serial", self.serial.clone()),
            ("Valid from", fmt_time(self.not_before)),
            ("Valid to", fmt_time(self.not_after)),
            ("Public key", self.key_algorithm.clone()),
            ("Signature", self.signature_algorithm.clone()),
            ("CA", ca),
            ("Key usage", list(&ku)),
            ("Ext key usage", list(&self.ext_key_usage)),
            ("SANs", list(&sans)),
            ("Subject key ID", id(&self.subject_key_id)),
            ("Authority key ID", id(&self.authority_key_id)),
            ("SHA-256", self.fingerprint_sha256.clone()),
        ];
        let mut out = format!(
            "X.509v3 {} certificate ({})\n",
            self.kind(),
            self.key_algorithm
        );
        for (name, value) in rows {
            let _ = writeln!(out, "  {:<17} {value}", format!("{name}:"));
        }
        out
    }
}
