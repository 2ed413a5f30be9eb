//! web's gRPC clients of emoji-svc and voting-svc, in plaintext (the
//! proxies add mTLS). Voting is called by method name: `Vote<Name>` is
//! chosen at run time from the shortcode.

use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::{
    Request, Status,
    transport::{Channel, Endpoint},
};

use crate::{
    emoji,
    proto::{
        self, FindByShortcodeRequest, ListAllEmojiRequest, ResultsRequest, VoteRequest,
        VoteResponse, VotingResult, emoji_service_client::EmojiServiceClient,
    },
    voting,
};

/// How long one call may take before web answers 500.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connected channel to `host:port` (emojivoto's `EMOJISVC_HOST`).
pub fn channel(host_port: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{host_port}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy())
}

/// Both services, as web calls them.
#[derive(Clone, Debug)]
pub struct Backends {
    emoji: EmojiServiceClient<Channel>,
    voting: tonic::client::Grpc<Channel>,
}

impl Backends {
    pub fn new(emoji: Channel, voting: Channel) -> Self {
        Self {
            emoji: EmojiServiceClient::new(emoji),
            voting: tonic::client::Grpc::new(voting),
        }
    }

    pub async fn list_all(&self) -> Result<Vec<proto::Emoji>, Status> {
        let mut c = self.emoji.clone();
        Ok(c.list_all(ListAllEmojiRequest {}).await?.into_inner().list)
    }

    /// The emoji of `shortcode`, `None` if emoji-svc does not know it.
    pub async fn find(&self, shortcode: &str) -> Result<Option<proto::Emoji>, Status> {
        let mut c = self.emoji.clone();
        let req = FindByShortcodeRequest {
            shortcode: shortcode.into(),
        };
        Ok(c.find_by_shortcode(req).await?.into_inner().emoji)
    }

    /// Calls `Vote<Name>` of `shortcode`.
    pub async fn vote(&self, shortcode: &str) -> Result<(), Status> {
        let method = emoji::vote_method(shortcode)
            .ok_or_else(|| Status::invalid_argument(format!("no vote method for {shortcode}")))?;
        let path = PathAndQuery::try_from(format!("/{}/{method}", voting::SERVICE))
            .map_err(|e| Status::invalid_argument(format!("{method}: {e}")))?;
        let mut grpc = self.voting.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("voting-svc is not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<VoteRequest, VoteResponse>::default();
        grpc.unary(Request::new(VoteRequest {}), path, codec)
            .await
            .map(|_| ())
    }

    pub async fn results(&self) -> Result<Vec<VotingResult>, Status> {
        let mut grpc = self.voting.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("voting-svc is not ready: {e}")))?;
        let path = PathAndQuery::from_static("/emojivoto.v1.VotingService/Results");
        let codec = tonic_prost::ProstCodec::<ResultsRequest, proto::ResultsResponse>::default();
        let answer = grpc
            .unary(Request::new(ResultsRequest {}), path, codec)
            .await?;
        Ok(answer.into_inner().results)
    }
}
