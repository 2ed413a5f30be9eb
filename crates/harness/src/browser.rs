//! Headless Chromium for the tests of tandem's pages (the dashboard, the
//! demo app), driven over the DevTools protocol.
//!
//! - [`Browser::launch`] starts Debian's `chromium` (or `$TANDEM_CHROMIUM`)
//!   headless, in its own process group, with a temporary profile, its
//!   DevTools endpoint on a loopback port that it picks itself (read back
//!   from the profile's `DevToolsActivePort`, so there is no port race).
//!   Dropping it kills that process group, by its id.
//! - [`Browser::page`] opens a tab; a [`Page`] navigates, evaluates
//!   JavaScript, waits until an expression is true, and reads text.
//!
//! The DevTools client is the few commands these tests need, as JSON over
//! tokio-tungstenite's websocket: a full CDP crate (chromiumoxide,
//! headless_chrome) brings thousands of generated types and its own
//! browser-fetching machinery, for four commands.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromium may take to open its DevTools port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "chromium is not installed (looked for {looked} on PATH and $TANDEM_CHROMIUM): install Debian's package with `apt-get install chromium` (scripts/test.sh does)"
    )]
    Missing { looked: String },
    #[error("starting {binary}")]
    Start {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chromium did not open its DevTools port within {secs}s; its output:\n{log}")]
    NoPort { secs: u64, log: String },
    #[error("chromium exited ({status}); its output:\n{log}")]
    Exited { status: String, log: String },
    #[error("DevTools websocket {url}")]
    Connect {
        url: String,
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("DevTools {method}: {message}")]
    Protocol { method: String, message: String },
    #[error("{what}: not true within {secs}s; last value: {last}; the page's text:\n{text}")]
    NotTrue {
        what: String,
        secs: u64,
        last: String,
        text: String,
    },
}

/// A headless chromium, killed with its process group when dropped.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    /// `ws://127.0.0.1:PORT`
    endpoint: String,
    /// The browser-wide DevTools path, `/devtools/browser/ID`.
    browser_path: String,
}

/// The binary to run: `$TANDEM_CHROMIUM`, else the first of Debian's names on PATH.
fn find_chromium() -> Result<PathBuf, BrowserError> {
    find_chromium_in(
        std::env::var_os("TANDEM_CHROMIUM"),
        &std::env::var_os("PATH").unwrap_or_default(),
    )
}

fn find_chromium_in(
    chosen: Option<std::ffi::OsString>,
    path: &std::ffi::OsStr,
) -> Result<PathBuf, BrowserError> {
    const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
    if let Some(p) = chosen {
        return Ok(PathBuf::from(p));
    }
    for dir in std::env::split_paths(path) {
        for name in NAMES {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BrowserError::Missing {
        looked: NAMES.join(", "),
    })
}

impl Browser {
    /// Starts headless chromium and waits until its DevTools port is open.
    pub fn launch() -> Result<Self, BrowserError> {
        let binary = find_chromium()?;
        let profile = tempfile::tempdir().map_err(|source| BrowserError::Start {
            binary: binary.clone(),
            source,
        })?;
        let log = std::fs::File::create(profile.path().join("chromium.log")).map_err(|source| {
            BrowserError::Start {
                binary: binary.clone(),
                source,
            }
        })?;
        let log2 = log.try_clone().map_err(|source| BrowserError::Start {
            binary: binary.clone(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        cmd.args([
            "--headless",
            // As root (the tests' user), chromium refuses its sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
        // Its own group: its renderers and helpers go with it on drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|source| BrowserError::Start {
            binary: binary.clone(),
            source,
        })?;
        let mut browser = Self {
            child,
            profile,
            endpoint: String::new(),
            browser_path: String::new(),
        };
        let (port, path) = browser.wait_for_port()?;
        browser.endpoint = format!("ws://127.0.0.1:{port}");
        browser.browser_path = path;
        Ok(browser)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// `DevToolsActivePort` holds the port, then the browser's path.
    fn wait_for_port(&mut self) -> Result<(u16, String), BrowserError> {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(found) = read_active_port(&file) {
                return Ok(found);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BrowserError::Exited {
                    status: status.to_string(),
                    log: self.log_text(),
                });
            }
            if Instant::now() >= deadline {
                return Err(BrowserError::NoPort {
                    secs: START_TIMEOUT.as_secs(),
                    log: self.log_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new tab, on `about:blank`.
    pub async fn page(&self) -> Result<Page, BrowserError> {
        let mut browser = Cdp::connect(&format!("{}{}", self.endpoint, self.browser_path)).await?;
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let id = target["targetId"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol {
                method: "Target.createTarget".into(),
                message: format!("no targetId in {target}"),
            })?;
        let cdp = Cdp::connect(&format!("{}/devtools/page/{id}", self.endpoint)).await?;
        Ok(Page { cdp })
    }
}

fn read_active_port(file: &Path) -> Option<(u16, String)> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let port = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim().to_string();
    (!path.is_empty()).then_some((port, path))
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group's id is chromium's pid (process_group(0) above).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

// === DevTools ===

/// One DevTools websocket: commands by id; events are skipped.
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Self, BrowserError> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|source| BrowserError::Connect {
                url: url.to_string(),
                source,
            })?;
        Ok(Self { ws, next_id: 1 })
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let fail = |message: String| BrowserError::Protocol {
            method: method.to_string(),
            message,
        };
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        let exchange = async {
            self.ws
                .send(Message::text(request))
                .await
                .map_err(|e| fail(format!("sending: {e}")))?;
            while let Some(msg) = self.ws.next().await {
                let text = match msg.map_err(|e| fail(format!("reading: {e}")))? {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| fail(format!("not JSON ({e}): {text}")))?;
                if v["id"].as_u64() != Some(id) {
                    continue;
                }
                if let Some(e) = v.get("error") {
                    return Err(fail(e.to_string()));
                }
                return Ok(v["result"].clone());
            }
            Err(fail("the websocket closed".into()))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
    }
}

/// A tab.
pub struct Page {
    cdp: Cdp,
}

impl Page {
    /// Loads `url` and waits until the document has loaded.
    pub async fn goto(&mut self, url: &str) -> Result<(), BrowserError> {
        let nav = self.cdp.call("Page.navigate", json!({"url": url})).await?;
        if let Some(e) = nav["errorText"].as_str() {
            return Err(BrowserError::Protocol {
                method: "Page.navigate".into(),
                message: format!("{url}: {e}"),
            });
        }
        self.wait_until(
            &format!("loading {url}"),
            "document.readyState === 'complete'",
            CALL_TIMEOUT,
        )
        .await
    }

    /// The value of a JavaScript expression (promises are awaited).
    pub async fn eval(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let r = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(BrowserError::Protocol {
                method: "Runtime.evaluate".into(),
                message: format!(
                    "{expression}: {}",
                    e["exception"]["description"]
                        .as_str()
                        .unwrap_or(&e["text"].to_string())
                ),
            });
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` until it is `true`; a throw counts as not yet.
    /// Fails after `timeout` with the last value and the page's text.
    pub async fn wait_until(
        &mut self,
        what: &str,
        expression: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return 'threw: ' + e; }} }})()"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.eval(&guarded).await?;
            if last == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let text = self.body_text().await;
                return Err(BrowserError::NotTrue {
                    what: what.to_string(),
                    secs: timeout.as_secs(),
                    last: last.to_string(),
                    text,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element that matches a CSS `selector`.
    pub async fn text(&mut self, selector: &str) -> Result<Option<String>, BrowserError> {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        let v = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); return e ? e.textContent : null; }})()"
            ))
            .await?;
        Ok(v.as_str().map(String::from))
    }

    /// The text of every element that matches `selector`, in document order.
    pub async fn texts(&mut self, selector: &str) -> Result<Vec<String>, BrowserError> {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        let v = self
            .eval(&format!(
                "Array.from(document.querySelectorAll({sel}), e => e.textContent)"
            ))
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect())
    }

    /// The page's visible text (for failure messages), at most 4000 characters.
    pub async fn body_text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText.slice(0, 4000) : ''")
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(cannot read it: {e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_chromium_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_chromium_in(None, empty.path().as_os_str()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install chromium"), "{msg}");
        assert!(msg.contains("TANDEM_CHROMIUM"), "{msg}");

        std::fs::write(empty.path().join("chromium"), "").unwrap();
        let found = find_chromium_in(None, empty.path().as_os_str()).unwrap();
        assert_eq!(found, empty.path().join("chromium"));
        let chosen = find_chromium_in(Some("/opt/c".into()), empty.path().as_os_str()).unwrap();
        assert_eq!(chosen, PathBuf::from("/opt/c"));
    }

    #[test]
    fn the_devtools_port_file_is_read_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("DevToolsActivePort");
        assert_eq!(read_active_port(&file), None);
        std::fs::write(&file, "9222\n").unwrap();
        assert_eq!(read_active_port(&file), None, "half written");
        std::fs::write(&file, "9222\n/devtools/browser/abc\n").unwrap();
        assert_eq!(
            read_active_port(&file),
            Some((9222, "/devtools/browser/abc".to_string()))
        );
    }
}
