//! Pooled HTTP/1 connections that the server closes, without a word, just
//! as the client reuses them (`tandem_harness::churn`). hyper's client can
//! then leave a request in the queue of a connection that has closed,
//! unanswered forever (`tandem-bench churn` counts them). The endpoint
//! client must end every try: answered, failed, or stranded (never
//! written, so safe to send again).
//!
//! `TANDEM_CHURN_REQUESTS` sets how many requests (default 20,000).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use prometheus_client::registry::Registry;
use tandem_harness::churn::{Outcome, churning_server, drive};
use tandem_proxy::{
    endpoint::Endpoint,
    http::{EndpointClient, TryError},
    metrics::Metrics,
};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_try_ends_while_pooled_connections_close_under_it() {
    let total: u64 = match std::env::var("TANDEM_CHURN_REQUESTS") {
        Ok(n) => n.parse().expect("TANDEM_CHURN_REQUESTS is a whole number"),
        Err(_) => 20_000,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(churning_server(listener));
    let client = EndpointClient::new(
        Endpoint::forward(addr),
        vec![],
        Metrics::register(&mut Registry::default()),
        // The proxy's default connect timeout: tries stranded in a closed
        // connection are given up 3 s after it closed (`stranded_after`).
        Duration::from_secs(1),
    );
    let tally = drive(total, 16, Duration::from_secs(10), move || {
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("http://{addr}/"))
                .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                .unwrap();
            match client.request(req).await {
                Ok(rsp) if rsp.status() == 200 => Outcome::Answered,
                Ok(rsp) => panic!("the churning server answered {}", rsp.status()),
                Err(TryError::Stranded(_)) => Outcome::Stranded,
                Err(_) => Outcome::Failed,
            }
        }
    })
    .await;
    server.abort();
    println!("churn: {tally:?}");
    assert_eq!(
        tally.answered + tally.failed + tally.stranded + tally.hung,
        total
    );
    assert_eq!(tally.hung, 0, "tries that never ended: {tally:?}");
    // Most connections answer; a closed one costs the request it took.
    assert!(tally.answered > total / 2, "{tally:?}");
}
