//! The `tandem-identity` category: the trust anchors and the issuer that the
//! cluster really holds, read from its ConfigMap and Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tandem_identity::checks::{self, CheckOutcome};
use tandem_install::core::{ISSUER_CERT_KEY, ISSUER_SECRET};

use crate::{CheckResult, Context};

const HINT: &str = "reinstall with certificates that pass `tandem certificate verify`: see `tandem install --help`";

pub async fn checks(ctx: &Context) -> Vec<CheckResult> {
    let ns = ctx.options.namespace.as_str();
    let anchors = match crate::anchors::read_pem(&ctx.client, ns).await {
        Ok(a) => a,
        Err(e) => {
            return vec![CheckResult::fail(
                "trust anchors are readable",
                e,
                "install tandem with `tandem install | kubectl apply -f -`",
            )];
        }
    };
    let issuer = match read_issuer(ctx, ns).await {
        Ok(i) => i,
        Err(e) => {
            return vec![CheckResult::fail(
                "issuer certificate is readable",
                e,
                "install tandem with `tandem install | kubectl apply -f -`",
            )];
        }
    };
    checks::run_all(&anchors, &issuer, time::OffsetDateTime::now_utc())
        .into_iter()
        .map(|c| match c.outcome {
            CheckOutcome::Ok(_) => CheckResult::ok(c.name),
            CheckOutcome::Warn(m) => {
                CheckResult::warn(c.name, m, "rotate it before it expires: create a new one with `tandem certificate create` and reinstall")
            }
            CheckOutcome::Fail(m) => CheckResult::fail(c.name, m, HINT),
        })
        .collect()
}

async fn read_issuer(ctx: &Context, ns: &str) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(ISSUER_SECRET)
        .await
        .map_err(|e| format!("Secret {ns}/{ISSUER_SECRET}: {e}"))?
        .ok_or_else(|| format!("Secret {ns}/{ISSUER_SECRET} is missing"))?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(ISSUER_CERT_KEY))
        .ok_or_else(|| format!("Secret {ns}/{ISSUER_SECRET} has no key {ISSUER_CERT_KEY}"))?;
    String::from_utf8(bytes.0)
        .map_err(|_| format!("Secret {ns}/{ISSUER_SECRET}: {ISSUER_CERT_KEY} is not text"))
}
