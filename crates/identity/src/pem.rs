//! A small strict PEM reader and writer (RFC 7468).
//!
//! Our own, rather than a library's, so that each way a file can be wrong
//! gets its own message: no PEM at all, DER instead of PEM, an unterminated
//! block, mismatched labels, bad base64, or legacy encrypted keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Error;

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

/// Decodes every PEM block in `input`; text outside blocks is ignored.
pub(crate) fn parse(what: &str, input: &[u8]) -> Result<Vec<Block>, Error> {
    let bad = |reason: String| Error::BadPem {
        what: what.to_string(),
        reason,
    };
    let mut blocks = Vec::new();
    // (label, base64 so far, line where the block started, legacy-encrypted)
    let mut open: Option<(String, String, usize, bool)> = None;
    for (n, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        match &mut open {
            None => {
                if let Some(label) = boundary(line, "BEGIN") {
                    open = Some((label.to_string(), String::new(), n + 1, false));
                } else if line.starts_with("-----END ") {
                    return Err(bad(format!("line {}: END line without BEGIN", n + 1)));
                }
            }
            Some((label, data, start, legacy)) => {
                if let Some(end) = boundary(line, "END") {
                    if end != label {
                        return Err(bad(format!(
                            "line {}: \"-----END {end}-----\" closes \"-----BEGIN {label}-----\"",
                            n + 1
                        )));
                    }
                    if *legacy {
                        return Err(Error::LegacyEncryptedKey {
                            what: what.to_string(),
                        });
                    }
                    if data.is_empty() {
                        return Err(bad(format!("the {label} block at line {start} is empty")));
                    }
                    let der = STANDARD.decode(data.as_bytes()).map_err(|e| {
                        bad(format!(
                            "the {label} block at line {start} is not valid base64: {e}"
                        ))
                    })?;
                    blocks.push(Block {
                        label: std::mem::take(label),
                        der,
                    });
                    open = None;
                } else if line.starts_with("-----BEGIN ") {
                    return Err(bad(format!(
                        "line {}: a new BEGIN line inside the {label} block that starts at line {start}",
                        n + 1
                    )));
                } else if let Some((name, value)) = line.split_once(':') {
                    // RFC 1421 headers only appear in legacy encrypted keys.
                    if name.trim() == "Proc-Type" && value.contains("ENCRYPTED") {
                        *legacy = true;
                    } else if name.trim() != "DEK-Info" {
                        return Err(bad(format!(
                            "line {}: unexpected header {:?} in the {label} block",
                            n + 1,
                            name.trim()
                        )));
                    }
                } else {
                    data.push_str(line);
                }
            }
        }
    }
    if let Some((label, _, start, _)) = open {
        return Err(bad(format!(
            "the {label} block that starts at line {start} has no END line"
        )));
    }
    if blocks.is_empty() {
        return Err(Error::NotPem {
            what: what.to_string(),
            hint: hint(input),
        });
    }
    Ok(blocks)
}

/// The label of a `-----BEGIN LABEL-----` (or END) line.
fn boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

fn hint(input: &[u8]) -> &'static str {
    if input.iter().all(|b| b.is_ascii_whitespace()) {
        " (the input is empty)"
    } else if input.first() == Some(&0x30) {
        // A DER SEQUENCE; certificates and keys both start so.
        " (it looks like binary DER; convert it with `openssl x509 -inform der` or `openssl pkey -inform der`)"
    } else {
        ""
    }
}

/// The certificates in `input`, as DER, in order. Other blocks are ignored.
pub(crate) fn certificates(what: &str, input: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = parse(what, input)?;
    let found = labels(&blocks);
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            what: what.to_string(),
            found,
        });
    }
    Ok(certs)
}

/// "PRIVATE KEY, CERTIFICATE" for messages.
pub(crate) fn labels(blocks: &[Block]) -> String {
    blocks
        .iter()
        .map(|b| b.label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes DER as a PEM block with 64-column lines.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..200u8).collect();
        let pem = encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let blocks = parse("x", pem.as_bytes()).unwrap();
        assert_eq!(
            blocks,
            vec![Block {
                label: "CERTIFICATE".into(),
                der
            }]
        );
    }

    #[test]
    fn several_blocks_with_text_and_crlf() {
        let a = encode("CERTIFICATE", b"aaa");
        let b = encode("PRIVATE KEY", b"bbb");
        let input = format!("subject=foo\n{a}between\n{b}").replace('\n', "\r\n");
        let blocks = parse("x", input.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].label, "PRIVATE KEY");
        assert_eq!(blocks[1].der, b"bbb");
        assert_eq!(labels(&blocks), "CERTIFICATE, PRIVATE KEY");
    }

    #[test]
    fn bad_inputs() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "is not PEM: no \"-----BEGIN ...-----\" line found (the input is empty)"),
            (b"hello world\n", "is not PEM"),
            (b"\x30\x82\x01\x00\xff\xfe", "looks like binary DER"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "has no END line"),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "closes",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not valid base64",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                "is empty",
            ),
            (b"-----END CERTIFICATE-----\n", "END line without BEGIN"),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "legacy PEM encryption",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----BEGIN CERTIFICATE-----\n",
                "a new BEGIN line",
            ),
        ];
        for (input, want) in cases {
            let err = parse("f.pem", input).unwrap_err().to_string();
            assert!(err.starts_with("f.pem"), "{err}");
            assert!(err.contains(want), "input {input:?}: {err} lacks {want}");
        }
    }

    #[test]
    fn no_certificate() {
        let input = encode("PRIVATE KEY", b"k");
        let err = certificates("ca.crt", input.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "ca.crt holds no CERTIFICATE PEM block (it holds: PRIVATE KEY)"
        );
    }
}
