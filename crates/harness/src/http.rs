//! The one HTTP client of the tests and the benchmarks: a GET of a
//! process's admin or health port, over hyper's HTTP/1 client.
//!
//! [`get`] is async; [`http_get`] and [`http_get_addr`] are the same GET for
//! synchronous test code (and for async tests that call it without `.await`).

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one GET may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a GET got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET http://{addr}{path}: cannot connect: {source}")]
    Connect {
        addr: SocketAddr,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET http://{addr}{path}: {source}")]
    Http {
        addr: SocketAddr,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("GET http://{addr}{path}: not a request: {source}")]
    Request {
        addr: SocketAddr,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("GET http://{addr}{path}: no answer within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
}

/// An answer: its status code and its body (lossily UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// GET `path` from `addr`, within [`TIMEOUT`].
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, HttpError> {
    match tokio::time::timeout(TIMEOUT, exchange(addr, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(HttpError::Timeout {
            addr,
            path: path.to_string(),
            timeout: TIMEOUT,
        }),
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<Response, HttpError> {
    let http = |source| HttpError::Http {
        addr,
        path: path.to_string(),
        source,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect {
            addr,
            path: path.to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection is driven beside the request; it ends with it.
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| HttpError::Request {
            addr,
            path: path.to_string(),
            source,
        })?;
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
    .await
    .map_err(http);
    conn.abort();
    answer
}

/// A GET on 127.0.0.1 for synchronous code: (status, body), or None if
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_addr(&format!("127.0.0.1:{port}"), path)
}

/// A GET of `path` from `addr` (`ip:port`) for synchronous code: (status,
/// body), or None if `addr` is not an address or nothing answers.
pub fn http_get_addr(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().ok()?;
    block_on(get(addr, path)).ok().map(|r| (r.status, r.body))
}

/// Runs `f` on a runtime of its own in a thread of its own, so that
/// synchronous code can wait on it whether or not it runs inside a runtime.
pub(crate) fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for a blocking wait")
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A free port on 127.0.0.1 (for admin servers of processes under test).
pub fn free_port() -> u16 {
    free_addr().expect("a free loopback port").port()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-shot HTTP/1.1 server on loopback that answers `raw` to the
    /// first request and hands the request back.
    fn serve_once(raw: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = vec![0; 4096];
            let n = s.read(&mut request).unwrap();
            s.write_all(raw.as_bytes()).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (addr, server)
    }

    #[test]
    fn a_get_reads_status_and_body() {
        let (addr, server) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\nnot yet\n");
        assert_eq!(
            http_get_addr(&addr.to_string(), "/ready"),
            Some((503, "not yet\n".to_string()))
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
    }

    #[test]
    fn a_chunked_body_is_read_whole() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab \r\n2\r\n1\n\r\n0\r\n\r\n",
        );
        assert_eq!(
            http_get(addr.port(), "/metrics"),
            Some((200, "ab 1\n".into()))
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_and_works_inside_a_runtime() {
        let addr = free_addr().unwrap();
        let err = get(addr, "/live").await.unwrap_err();
        assert!(matches!(err, HttpError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("/live"), "{err}");
        // The blocking form from inside a runtime neither panics nor hangs.
        assert_eq!(http_get(addr.port(), "/live"), None);
        assert_eq!(http_get_addr("not an address", "/live"), None);
    }
}
