//! voting-svc: counts the votes, one `Vote<Name>` method per emoji, and
//! answers `Results` sorted by votes. Voting for `:doughnut:` fails with
//! gRPC Unknown "ERROR", emojivoto v11's deliberate bug (its share of
//! failures is `FAILURE_RATE`, 1 by default, as v11).
//!
//! The 100 vote methods differ only in their name, so they are served by
//! one handler: [`route`] maps a request's path to the emoji it votes for.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tonic::{
    Status,
    codegen::{Body, Service, StdError},
    server::NamedService,
};

use crate::{
    emoji::{self, DOUGHNUT, Emoji},
    metrics::GrpcMetrics,
    proto::{ResultsRequest, ResultsResponse, VoteRequest, VoteResponse, VotingResult},
};

/// The gRPC service's full name.
pub const SERVICE: &str = "emojivoto.v1.VotingService";

// === decisions ===

/// Why a vote was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// emojivoto's bug: the doughnut vote fails with "ERROR".
    #[error("ERROR")]
    Doughnut,
}

impl From<VoteError> for Status {
    fn from(e: VoteError) -> Self {
        Status::unknown(e.to_string())
    }
}

/// Whether a vote for `shortcode` fails: only `:doughnut:`'s, and those
/// only when `roll` (uniform in [0, 1)) falls under `failure_rate`.
pub fn vote_fails(shortcode: &str, failure_rate: f64, roll: f64) -> bool {
    shortcode == DOUGHNUT && roll < failure_rate
}

/// What a call's path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Vote(&'static Emoji),
    Results,
}

/// The call of a request path, `/emojivoto.v1.VotingService/VoteJoy`;
/// `None` for another service or an unknown method.
pub fn route(path: &str) -> Option<Call> {
    let method = path
        .strip_prefix('/')?
        .strip_prefix(SERVICE)?
        .strip_prefix('/')?;
    match method {
        "Results" => Some(Call::Results),
        m => emoji::by_vote_method(m).map(Call::Vote),
    }
}

// === impl Ballot ===

/// The vote counts (in memory, as emojivoto's).
#[derive(Debug)]
pub struct Ballot {
    counts: Mutex<HashMap<&'static str, i32>>,
    failure_rate: f64,
}

impl Ballot {
    pub fn new(failure_rate: f64) -> Self {
        Self {
            counts: Mutex::default(),
            failure_rate,
        }
    }

    /// Counts a vote for `emoji`, unless [`vote_fails`] with this `roll`.
    pub fn vote(&self, emoji: &'static Emoji, roll: f64) -> Result<(), VoteError> {
        if vote_fails(emoji.shortcode, self.failure_rate, roll) {
            return Err(VoteError::Doughnut);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(emoji.shortcode).or_default();
        *n = n.saturating_add(1);
        Ok(())
    }

    /// Every emoji voted for, most votes first (ties by shortcode).
    pub fn results(&self) -> Vec<VotingResult> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut results: Vec<VotingResult> = counts
            .iter()
            .map(|(code, votes)| VotingResult {
                shortcode: (*code).into(),
                votes: *votes,
            })
            .collect();
        results.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.shortcode.cmp(&b.shortcode)));
        results
    }
}

// === impl VotingServer ===

/// The VotingService, for `tonic::transport::Server::add_service`.
#[derive(Clone, Debug)]
pub struct VotingServer {
    ballot: Arc<Ballot>,
    metrics: GrpcMetrics,
}

impl VotingServer {
    pub fn new(ballot: Arc<Ballot>, metrics: GrpcMetrics) -> Self {
        Self { ballot, metrics }
    }
}

impl NamedService for VotingServer {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for VotingServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (ballot, metrics) = (self.ballot.clone(), self.metrics.clone());
        match route(req.uri().path()) {
            Some(Call::Vote(emoji)) => Box::pin(async move {
                let svc = VoteSvc {
                    ballot,
                    metrics,
                    emoji,
                };
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(svc, req)
                    .await)
            }),
            Some(Call::Results) => Box::pin(async move {
                let svc = ResultsSvc { ballot, metrics };
                Ok(tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(svc, req)
                    .await)
            }),
            None => {
                let refused = Status::unimplemented(format!("no method {}", req.uri().path()));
                Box::pin(async move { Ok(refused.into_http()) })
            }
        }
    }
}

struct VoteSvc {
    ballot: Arc<Ballot>,
    metrics: GrpcMetrics,
    emoji: &'static Emoji,
}

impl tonic::server::UnaryService<VoteRequest> for VoteSvc {
    type Response = VoteResponse;
    type Future = futures::future::Ready<Result<tonic::Response<VoteResponse>, Status>>;

    fn call(&mut self, _: tonic::Request<VoteRequest>) -> Self::Future {
        let result = self
            .ballot
            .vote(self.emoji, rand::random::<f64>())
            .map_err(Status::from);
        let method = emoji::vote_method(self.emoji.shortcode).unwrap_or_default();
        self.metrics.handled(SERVICE, &method, &result);
        if let Err(e) = &result {
            tracing::debug!(emoji = self.emoji.shortcode, error = %e.message(), "vote refused");
        }
        futures::future::ready(result.map(|()| tonic::Response::new(VoteResponse {})))
    }
}

struct ResultsSvc {
    ballot: Arc<Ballot>,
    metrics: GrpcMetrics,
}

impl tonic::server::UnaryService<ResultsRequest> for ResultsSvc {
    type Response = ResultsResponse;
    type Future = futures::future::Ready<Result<tonic::Response<ResultsResponse>, Status>>;

    fn call(&mut self, _: tonic::Request<ResultsRequest>) -> Self::Future {
        self.metrics.handled(SERVICE, "Results", &Ok(()));
        let results = self.ballot.results();
        futures::future::ready(Ok(tonic::Response::new(ResultsResponse { results })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_doughnut_votes_fail_and_by_the_rate() {
        let cases = [
            (":doughnut:", 1.0, 0.0, true),
            (":doughnut:", 1.0, 0.999, true),
            (":doughnut:", 0.0, 0.0, false),
            (":doughnut:", 0.5, 0.4, true),
            (":doughnut:", 0.5, 0.5, false),
            (":joy:", 1.0, 0.0, false),
            (":pizza:", 1.0, 0.5, false),
        ];
        for (code, rate, roll, fails) in cases {
            assert_eq!(vote_fails(code, rate, roll), fails, "{code} {rate} {roll}");
        }
    }

    #[test]
    fn paths_route_to_votes_and_results() {
        let joy = emoji::find(":joy:").unwrap();
        let cases = [
            ("/emojivoto.v1.VotingService/VoteJoy", Some(Call::Vote(joy))),
            ("/emojivoto.v1.VotingService/Results", Some(Call::Results)),
            ("/emojivoto.v1.VotingService/VoteNothing", None),
            ("/emojivoto.v1.VotingService/", None),
            ("/emojivoto.v1.EmojiService/ListAll", None),
            ("/emojivoto.v1.VotingServiceX/VoteJoy", None),
            ("emojivoto.v1.VotingService/VoteJoy", None),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
        let doughnut = route("/emojivoto.v1.VotingService/VoteDoughnut");
        assert_eq!(doughnut, Some(Call::Vote(emoji::find(DOUGHNUT).unwrap())));
    }

    #[test]
    fn results_are_sorted_by_votes_and_doughnut_is_not_counted() {
        let ballot = Ballot::new(1.0);
        let e = |c| emoji::find(c).unwrap();
        for code in [":joy:", ":pizza:", ":pizza:", ":taco:", ":pizza:", ":joy:"] {
            ballot.vote(e(code), 0.3).unwrap();
        }
        assert_eq!(ballot.vote(e(DOUGHNUT), 0.3), Err(VoteError::Doughnut));
        let got: Vec<(String, i32)> = ballot
            .results()
            .into_iter()
            .map(|r| (r.shortcode, r.votes))
            .collect();
        let want = [(":pizza:", 3), (":joy:", 2), (":taco:", 1)].map(|(c, n)| (c.to_string(), n));
        assert_eq!(got, want);
        assert_eq!(
            Status::from(VoteError::Doughnut).code(),
            tonic::Code::Unknown
        );
        assert_eq!(Status::from(VoteError::Doughnut).message(), "ERROR");
        // With no failure rate, the doughnut counts like any emoji.
        let lenient = Ballot::new(0.0);
        lenient.vote(e(DOUGHNUT), 0.0).unwrap();
        assert_eq!(lenient.results()[0].shortcode, DOUGHNUT);
    }
}
