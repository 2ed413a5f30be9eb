//! Connection churn: a server that closes pooled HTTP/1 connections without
//! a word, just as clients reuse them, and a driver that counts how each of
//! many requests ended. hyper's client can leave a request in the queue of
//! a connection that closed under it, unanswered forever
//! (`tandem-bench churn` counts them).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Of 10 answers, how many close their connection a moment later.
const CLOSING_IN_10: u32 = 3;
/// The longest such moment, in µs.
const CLOSE_WITHIN_MICROS: u64 = 300;

/// Answers each request on `listener` `200 ok` on a kept-alive connection,
/// then closes it, without a word, 0-300 µs later, after 3 answers in 10.
pub async fn churning_server(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream));
    }
}

async fn serve(mut stream: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    loop {
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
            if rand::random::<u32>() % 10 < CLOSING_IN_10 {
                let pause = rand::random::<u64>() % CLOSE_WITHIN_MICROS;
                tokio::time::sleep(Duration::from_micros(pause)).await;
                return;
            }
        }
    }
}

/// How one request ended, by the client's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Failed,
    /// Given up by the client as left in a closed connection, never
    /// written (the proxy's endpoint client sends it again).
    Stranded,
}

impl Outcome {
    /// A client's result: any response is an answer.
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        match result {
            Ok(_) => Outcome::Answered,
            Err(_) => Outcome::Failed,
        }
    }
}

/// How many requests ended each way; `hung` never ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub requests: u64,
    pub answered: u64,
    pub failed: u64,
    pub stranded: u64,
    pub hung: u64,
}

/// Sends `total` requests with `send`, from `clients` tasks at once; a
/// request with no end after `hung_after` counts as hung.
pub async fn drive<F, Fut>(total: u64, clients: u64, hung_after: Duration, send: F) -> Tally
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    #[derive(Default)]
    struct Counts {
        sent: AtomicU64,
        answered: AtomicU64,
        failed: AtomicU64,
        stranded: AtomicU64,
        hung: AtomicU64,
    }
    let counts = Arc::new(Counts::default());
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (send, counts) = (send.clone(), counts.clone());
            tokio::spawn(async move {
                while counts.sent.fetch_add(1, Ordering::Relaxed) < total {
                    let count = match tokio::time::timeout(hung_after, send()).await {
                        Ok(Outcome::Answered) => &counts.answered,
                        Ok(Outcome::Failed) => &counts.failed,
                        Ok(Outcome::Stranded) => &counts.stranded,
                        Err(_) => &counts.hung,
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a churn client panicked");
    }
    Tally {
        requests: total,
        answered: counts.answered.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        stranded: counts.stranded.load(Ordering::Relaxed),
        hung: counts.hung.load(Ordering::Relaxed),
    }
}
