//! A YAML stream in, the injected stream out, documents in order.

use serde_json::Value;

use crate::{Config, Report, inject_object};

/// The injected stream and what happened to each object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// Every document, each after a `---` line: the original text when
    /// nothing in it changed, else the injected object re-rendered.
    pub yaml: String,
    pub reports: Vec<Report>,
}

/// One document that is not a Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {index} (line {line}): {message}")]
pub struct DocumentError {
    /// 1-based, counting non-empty documents.
    pub index: usize,
    /// 1-based line of the stream where the document starts.
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Every broken document, in order; nothing was injected.
    #[error("{} document(s) could not be read:\n{}", .0.len(), list(.0))]
    Broken(Vec<DocumentError>),
    #[error("document {index}: could not be written as YAML: {message}")]
    Render { index: usize, message: String },
}

fn list(errors: &[DocumentError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One document's text and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Document {
    pub line: usize,
    pub text: String,
}

/// Splits a stream at `---` lines (text after `--- ` on the same line
/// belongs to the new document) and drops `...` end markers and documents
/// that hold only blanks and comments.
pub(crate) fn split_documents(stream: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    let mut flush = |text: &mut String, line: usize| {
        let meaningful = text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            docs.push(Document {
                line,
                text: std::mem::take(text),
            });
        }
        text.clear();
    };
    for (i, line) in stream.lines().enumerate() {
        let number = i + 1;
        let rest = if line == "---" {
            Some("")
        } else {
            line.strip_prefix("--- ")
                .or_else(|| line.strip_prefix("---\t"))
        };
        if let Some(rest) = rest {
            flush(&mut current, start);
            // The document starts on this line only if text follows `--- `.
            start = if rest.trim().is_empty() {
                number + 1
            } else {
                number
            };
            if !rest.trim().is_empty() {
                current.push_str(rest);
                current.push('\n');
            }
            continue;
        }
        if line == "..." {
            continue;
        }
        if current.is_empty() && line.trim().is_empty() {
            start = number + 1;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, start);
    docs
}

/// Parses one document as an object (a mapping).
fn parse(doc: &Document, index: usize) -> Result<Value, DocumentError> {
    let bad = |message: String| DocumentError {
        index,
        line: doc.line,
        message,
    };
    // Blank lines in front, so that the parser's line numbers are the
    // stream's; no source snippet, so that each error is one line.
    let text = "\n".repeat(doc.line.saturating_sub(1)) + &doc.text;
    let options = serde_saphyr::options!(with_snippet: false);
    let value: Value =
        serde_saphyr::from_str_with_options(&text, options).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad(
            "not a Kubernetes object (a mapping with apiVersion and kind)".into(),
        ));
    }
    Ok(value)
}

/// Injects every workload of `stream`. Either every document parses and
/// the whole stream comes back, or the error names each broken document.
pub fn inject_stream(stream: &str, cfg: &Config) -> Result<Injected, StreamError> {
    let docs = split_documents(stream);
    let mut parsed = Vec::with_capacity(docs.len());
    let mut broken = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        match parse(doc, i + 1) {
            Ok(v) => parsed.push(v),
            Err(e) => broken.push(e),
        }
    }
    if !broken.is_empty() {
        return Err(StreamError::Broken(broken));
    }
    let mut out = String::new();
    let mut reports = Vec::new();
    for (i, (doc, value)) in docs.iter().zip(&parsed).enumerate() {
        out.push_str("---\n");
        match inject_object(value, cfg, &mut reports) {
            Some(injected) => {
                let text = serde_saphyr::to_string(&injected).map_err(|e| StreamError::Render {
                    index: i + 1,
                    message: e.to_string(),
                })?;
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(&doc.text),
        }
    }
    Ok(Injected { yaml: out, reports })
}
