//! emoji-svc: the emoji table over gRPC (`ListAll`, `FindByShortcode`).

use tonic::{Request, Response, Status};

use crate::{
    emoji::{self, Emoji},
    metrics::GrpcMetrics,
    proto::{
        self, FindByShortcodeRequest, FindByShortcodeResponse, ListAllEmojiRequest,
        ListAllEmojiResponse, emoji_service_server,
    },
};

/// The gRPC service's full name.
pub const SERVICE: &str = "emojivoto.v1.EmojiService";

/// The EmojiService over [`emoji::ALL`].
#[derive(Clone, Debug)]
pub struct EmojiServer {
    metrics: GrpcMetrics,
}

impl EmojiServer {
    /// The service for `tonic::transport::Server::add_service`.
    pub fn service(metrics: GrpcMetrics) -> emoji_service_server::EmojiServiceServer<Self> {
        emoji_service_server::EmojiServiceServer::new(Self { metrics })
    }
}

pub fn to_proto(e: &Emoji) -> proto::Emoji {
    proto::Emoji {
        unicode: e.unicode.into(),
        shortcode: e.shortcode.into(),
    }
}

#[tonic::async_trait]
impl emoji_service_server::EmojiService for EmojiServer {
    async fn list_all(
        &self,
        _: Request<ListAllEmojiRequest>,
    ) -> Result<Response<ListAllEmojiResponse>, Status> {
        self.metrics.handled(SERVICE, "ListAll", &Ok(()));
        let list = emoji::ALL.iter().map(to_proto).collect();
        Ok(Response::new(ListAllEmojiResponse { list }))
    }

    /// An unknown shortcode answers no emoji, not an error, as emojivoto's.
    async fn find_by_shortcode(
        &self,
        request: Request<FindByShortcodeRequest>,
    ) -> Result<Response<FindByShortcodeResponse>, Status> {
        self.metrics.handled(SERVICE, "FindByShortcode", &Ok(()));
        let found = emoji::find(&request.get_ref().shortcode).map(to_proto);
        Ok(Response::new(FindByShortcodeResponse { emoji: found }))
    }
}
