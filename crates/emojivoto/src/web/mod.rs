//! web: emojivoto's HTTP API over the two gRPC services, and a page that
//! lists the emojis, votes on a click and shows the leaderboard.
//!
//! - `GET /api/list`: `[{shortcode, unicode}]`.
//! - `GET /api/vote?choice=:x:`: 400 if the choice is empty or unknown to
//!   emoji-svc; 500 `{"error": ...}` if a call fails (`:doughnut:`'s vote
//!   does); 200 with an empty body when counted.
//! - `GET /api/leaderboard`: `[{votes, unicode, shortcode}]`, most votes first.
//! - `/`, `/leaderboard` (the page), `/js` (its script).

pub mod client;

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tonic::Status;

pub use self::client::Backends;

/// The page: the emoji grid (`#emoji-list`, one `button.emoji` with
/// `data-shortcode` each), the vote's outcome (`#vote-status`) and the
/// leaderboard (`#leaderboard`, one `.leaderboard-row` each).
pub const INDEX_HTML: &str = include_str!("index.html");
/// The page's script.
pub const APP_JS: &str = include_str!("app.js");

/// The routes, without a socket, so that tests drive them.
pub fn router(backends: Backends) -> Router {
    Router::new()
        .route("/api/list", get(list))
        .route("/api/vote", get(vote))
        .route("/api/leaderboard", get(leaderboard))
        .route("/", get(page))
        .route("/leaderboard", get(page))
        .route("/js", get(script))
        .with_state(backends)
}

// === answers ===

/// How a vote went, before it becomes an HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// No `choice`, or an empty one.
    NoChoice,
    /// emoji-svc does not know the choice.
    Unknown(String),
    /// A gRPC call failed (the doughnut's vote does, on purpose).
    Failed(String),
    Voted,
}

/// The status and body of a vote's answer, as emojivoto's web gives them.
pub fn vote_answer(outcome: &VoteOutcome) -> (StatusCode, String) {
    match outcome {
        VoteOutcome::NoChoice => (StatusCode::BAD_REQUEST, "emoji choice is empty\n".into()),
        VoteOutcome::Unknown(choice) => (
            StatusCode::BAD_REQUEST,
            format!("no emoji with shortcode {choice}\n"),
        ),
        VoteOutcome::Failed(error) => (StatusCode::INTERNAL_SERVER_ERROR, error_body(error)),
        VoteOutcome::Voted => (StatusCode::OK, String::new()),
    }
}

/// `{"error": "..."}`.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn failed(status: &Status) -> Response {
    let body = error_body(status.message());
    let json = [(header::CONTENT_TYPE, "application/json")];
    (StatusCode::INTERNAL_SERVER_ERROR, json, body).into_response()
}

// === handlers ===

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ListEntry {
    pub shortcode: String,
    pub unicode: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LeaderboardEntry {
    pub votes: i32,
    pub unicode: String,
    pub shortcode: String,
}

async fn list(State(b): State<Backends>) -> Response {
    match b.list_all().await {
        Ok(list) => Json(
            list.into_iter()
                .map(|e| ListEntry {
                    shortcode: e.shortcode,
                    unicode: e.unicode,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(s) => {
            tracing::warn!(error = %s.message(), "ListAll failed");
            failed(&s)
        }
    }
}

async fn vote(State(b): State<Backends>, Query(query): Query<HashMap<String, String>>) -> Response {
    let choice = query.get("choice").map(String::as_str).unwrap_or_default();
    let outcome = cast(&b, choice).await;
    if let VoteOutcome::Failed(error) = &outcome {
        tracing::debug!(choice, error, "vote failed");
    }
    let (status, body) = vote_answer(&outcome);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let json = [(header::CONTENT_TYPE, "application/json")];
        return (status, json, body).into_response();
    }
    (status, body).into_response()
}

/// FindByShortcode, then the choice's `Vote<Name>`.
async fn cast(b: &Backends, choice: &str) -> VoteOutcome {
    if choice.is_empty() {
        return VoteOutcome::NoChoice;
    }
    match b.find(choice).await {
        Err(s) => VoteOutcome::Failed(s.message().into()),
        Ok(None) => VoteOutcome::Unknown(choice.into()),
        Ok(Some(_)) => match b.vote(choice).await {
            Ok(()) => VoteOutcome::Voted,
            Err(s) => VoteOutcome::Failed(s.message().into()),
        },
    }
}

/// Results, then FindByShortcode of each entry (as emojivoto's web does).
async fn leaderboard(State(b): State<Backends>) -> Response {
    let results = match b.results().await {
        Ok(r) => r,
        Err(s) => return failed(&s),
    };
    let found = futures::future::join_all(results.iter().map(|r| b.find(&r.shortcode))).await;
    let mut board = Vec::with_capacity(results.len());
    for (r, f) in results.into_iter().zip(found) {
        match f {
            Ok(Some(e)) => board.push(LeaderboardEntry {
                votes: r.votes,
                unicode: e.unicode,
                shortcode: e.shortcode,
            }),
            Ok(None) => {}
            Err(s) => return failed(&s),
        }
    }
    Json(board).into_response()
}

async fn page() -> Response {
    let html = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    (html, INDEX_HTML).into_response()
}

async fn script() -> Response {
    let js = [(header::CONTENT_TYPE, "application/javascript")];
    (js, APP_JS).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_answer_as_emojivotos_web() {
        let cases = [
            (VoteOutcome::NoChoice, 400, None),
            (VoteOutcome::Unknown(":nope:".into()), 400, None),
            (
                VoteOutcome::Failed("ERROR".into()),
                500,
                Some(r#"{"error":"ERROR"}"#),
            ),
            (VoteOutcome::Voted, 200, Some("")),
        ];
        for (outcome, status, body) in cases {
            let (s, b) = vote_answer(&outcome);
            assert_eq!(s.as_u16(), status, "{outcome:?}");
            if let Some(body) = body {
                assert_eq!(b, body, "{outcome:?}");
            }
        }
        let quoted: serde_json::Value = serde_json::from_str(&error_body("a \"b\"")).unwrap();
        assert_eq!(quoted["error"], "a \"b\"");
    }

    #[test]
    fn the_page_has_the_ids_the_browser_test_looks_for() {
        for id in [
            "id=\"emoji-list\"",
            "id=\"vote-status\"",
            "id=\"leaderboard\"",
            "src=\"/js\"",
        ] {
            assert!(INDEX_HTML.contains(id), "{id} missing from the page");
        }
        for name in [
            "/api/list",
            "/api/vote?choice=",
            "/api/leaderboard",
            "leaderboard-row",
            "emoji",
        ] {
            assert!(APP_JS.contains(name), "{name} missing from the script");
        }
    }
}
