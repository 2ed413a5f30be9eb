//! `io.linkerd.proxy.identity.Identity/Certify`: gathers the issuer, the
//! token review and the time, and lets `tandem_identity::certify` judge and
//! sign, in Linkerd's order (see that module).

use std::{
    sync::{Arc, RwLock},
    time::Instant,
};

use kube::Client;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse, identity_server::Identity};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tandem_identity::{
    certify::{self, CertifyError, Code, LeafIssuer},
    fmt_time,
    time::{Duration, OffsetDateTime},
};
use tonic::{Request, Response, Status};

use super::events::{Events, Issued};

/// The issuer the periodic check loaded last; `None` while none is valid.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    issuer: RwLock<Option<Arc<LeafIssuer>>>,
}

impl Shared {
    pub(crate) fn set(&self, issuer: Option<Arc<LeafIssuer>>) {
        *self.issuer.write().unwrap_or_else(|e| e.into_inner()) = issuer;
    }

    pub(crate) fn get(&self) -> Option<Arc<LeafIssuer>> {
        self.issuer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What names identities and how long leaves live.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub control_plane_ns: String,
    pub trust_domain: String,
    pub audience: String,
    pub lifetime: Duration,
}

// === metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
    code: &'static str,
}

/// `tandem_identity_certify_total{result,code}` and the latency histogram.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    total: Family<ResultLabels, Counter>,
    duration: Histogram,
}

impl Metrics {
    /// Registers the metrics on a registry with the `tandem_identity` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            total: Family::default(),
            // 1 ms .. ~8 s: a TokenReview is a few ms, a slow API server seconds.
            duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 14,
            )),
        };
        registry.register(
            "certify",
            "Certify calls, by result (issued, refused) and gRPC code",
            m.total.clone(),
        );
        registry.register(
            "certify_duration_seconds",
            "How long Certify calls take, from request to answer",
            m.duration.clone(),
        );
        m
    }

    fn observe(&self, result: &Result<CertifyResponse, CertifyError>, started: Instant) {
        let labels = match result {
            Ok(_) => ResultLabels {
                result: "issued",
                code: "ok",
            },
            Err(e) => ResultLabels {
                result: "refused",
                code: e.code().as_str(),
            },
        };
        self.total.get_or_create(&labels).inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}

// === impl Certifier ===

/// The Certify handler.
pub(crate) struct Certifier {
    pub shared: Arc<Shared>,
    pub client: Client,
    pub config: Config,
    pub events: Events,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl Identity for Certifier {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let identity = req.identity.clone();
        let result = self.certify(req).await;
        self.metrics.observe(&result, started);
        match result {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                let code = e.code();
                if code == Code::Unavailable || code == Code::Internal {
                    tracing::error!(%identity, error = %e, "certify failed");
                } else {
                    tracing::info!(%identity, error = %e, "certify refused");
                }
                Err(Status::new(grpc_code(code), e.to_string()))
            }
        }
    }
}

impl Certifier {
    async fn certify(&self, req: CertifyRequest) -> Result<CertifyResponse, CertifyError> {
        // 1. An issuer, still valid.
        let issuer = self.shared.get().ok_or_else(|| CertifyError::NoIssuer {
            reason: "none has passed the checks yet (see the log)".into(),
        })?;
        issuer.check_valid(OffsetDateTime::now_utc())?;
        // 2. Every field.
        let CertifyRequest {
            identity,
            token,
            certificate_signing_request: csr,
        } = req;
        certify::check_fields(&identity, &token, &csr)?;
        // 3. The CSR.
        let csr = certify::check_csr(&csr, &identity)?;
        // 4. The token.
        let token = String::from_utf8(token).map_err(|_| CertifyError::TokenRefused {
            reason: "the token is not UTF-8".into(),
        })?;
        let user = super::review::review(&self.client, token.trim(), &self.config.audience).await?;
        let name = certify::identity_of_token_user(
            &user,
            &self.config.control_plane_ns,
            &self.config.trust_domain,
        )?;
        let (ns, sa) = certify::token_user_service_account(&user)?;
        // 5. The token's identity is the one asked for.
        certify::check_identity_matches(&identity, &name)?;
        // 6. Sign.
        let leaf = certify::sign_leaf(
            &issuer,
            &csr,
            OffsetDateTime::now_utc(),
            self.config.lifetime,
        )?;
        let until = fmt_time(leaf.not_after);
        tracing::info!(%identity, %until, "issued a leaf certificate");
        self.events.issued(Issued {
            namespace: ns.to_string(),
            name: sa.to_string(),
            note: format!("issued certificate for {identity} until {until}"),
        });
        Ok(CertifyResponse {
            leaf_certificate: leaf.der,
            intermediate_certificates: vec![issuer.cert_der().to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: leaf.not_after.unix_timestamp(),
                nanos: 0,
            }),
        })
    }
}

fn grpc_code(code: Code) -> tonic::Code {
    match code {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Internal => tonic::Code::Internal,
    }
}
