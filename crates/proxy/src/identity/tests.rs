//! The refresh loop under paused time: when it calls, what it publishes.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tandem_meshtls::{Credentials, Name, credentials_channel};
use tokio::time::Instant;

use super::*;

fn creds(life: Duration) -> Credentials {
    Credentials {
        name: "web.ns.serviceaccount.identity.tandem.cluster.local"
            .parse::<Name>()
            .unwrap(),
        chain: vec![],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![])),
        not_after: SystemTime::now() + life,
    }
}

fn failure() -> Error {
    Error::EmptyToken {
        path: PathBuf::from("/token"),
    }
}

#[tokio::test(start_paused = true)]
async fn loop_publishes_renews_at_70_percent_and_retries_after_10s() {
    let secs = Duration::from_secs;
    // The script of answers, as lifetimes (None: a failure).
    let script: VecDeque<Option<Duration>> = [None, None, Some(secs(100)), Some(secs(1000)), None]
        .into_iter()
        .collect();
    let script = Arc::new(Mutex::new(script));
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let attempt = {
        let (script, calls) = (script.clone(), calls.clone());
        move || {
            calls.lock().unwrap().push(Instant::now());
            let next = script.lock().unwrap().pop_front().flatten();
            async move {
                match next {
                    Some(life) => Ok(creds(life)),
                    None => Err(failure()),
                }
            }
        }
    };
    let (tx, mut rx) = credentials_channel();
    let metrics = Metrics::default();
    let start = Instant::now();
    let task = tokio::spawn(refresh_loop(
        attempt,
        tx,
        metrics.clone(),
        Schedule::default(),
    ));

    // Two failures (10 s apart), then the first certificate at 20 s.
    rx.changed().await.unwrap();
    assert_eq!(start.elapsed(), secs(20));
    assert!(rx.borrow().is_some());
    assert_eq!(metrics.refreshes(), 1);
    // Renewed at 70% of 100 s, then at 70% of 1000 s.
    rx.changed().await.unwrap();
    assert_eq!(metrics.refreshes(), 2);
    let expiry = metrics.expiration();
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expiry - now_unix - 1000).abs() <= 1,
        "{expiry} vs {now_unix}"
    );

    // Let the next attempt (a failure) and one retry happen, then stop.
    tokio::time::sleep(secs(700 + 10 + 1)).await;
    drop(rx);
    tokio::time::timeout(secs(60), task)
        .await
        .expect("the loop stops")
        .unwrap();

    let calls = calls.lock().unwrap();
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    let want = [secs(10), secs(10), secs(70), secs(700), secs(10)];
    assert!(gaps.len() >= want.len(), "{gaps:?}");
    for (got, want) in gaps.iter().zip(want) {
        // SystemTime runs on while tokio's clock is paused: allow a few ms.
        assert!(got.abs_diff(want) < Duration::from_millis(50), "{gaps:?}");
    }
    // The failures after the last success kept the last credentials.
    assert_eq!(metrics.refreshes(), 2);
}

// === the answer's checks ===

mod answer {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
        KeyPair,
    };
    use rustls_pki_types::CertificateDer;
    use tandem_meshtls::TrustAnchors;

    use super::*;

    const ME: &str = "web.ns.serviceaccount.identity.tandem.cluster.local";

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
        params: CertificateParams,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key, params }
    }

    /// A leaf for the CSR's key (or `other_key`), named `name`, signed by `ca`.
    fn leaf(ca: &Ca, csr: &[u8], name: &str, other_key: bool) -> CertificateDer<'static> {
        let mut req = CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
        req.params.subject_alt_names = vec![rcgen::SanType::DnsName(name.try_into().unwrap())];
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        if other_key {
            let key = KeyPair::generate().unwrap();
            return req.params.signed_by(&key, &issuer).unwrap().der().clone();
        }
        req.signed_by(&issuer).unwrap().der().clone()
    }

    #[tokio::test]
    async fn only_a_leaf_for_our_key_and_name_under_the_anchors_is_taken() {
        let root = ca("root");
        let stranger = ca("stranger");
        let certifier = Certifier::new(Config {
            local_name: ME.parse().unwrap(),
            token_file: "/nonexistent".into(),
            svc_addr: "127.0.0.1:1".into(),
            svc_name: "identity.tandem".parse().unwrap(),
            anchors: TrustAnchors::from_pem(&root.cert.pem()).unwrap(),
        })
        .unwrap();
        let csr = certifier.csr_der().to_vec();
        let cases = [
            ("ours", leaf(&root, &csr, ME, false), true),
            ("another key", leaf(&root, &csr, ME, true), false),
            (
                "another name",
                leaf(
                    &root,
                    &csr,
                    "api.ns.serviceaccount.identity.tandem.cluster.local",
                    false,
                ),
                false,
            ),
            ("another root", leaf(&stranger, &csr, ME, false), false),
        ];
        for (what, leaf, ok) in cases {
            let got = certifier.check(&[leaf]);
            assert_eq!(got.is_ok(), ok, "{what}: {got:?}");
            if let Err(e) = got {
                assert!(matches!(e, Error::BadCertificate(_)), "{what}: {e}");
            }
        }
        // No token file: a clear error, no call.
        let err = certifier.certify().await.unwrap_err();
        assert!(matches!(err, Error::Token { .. }), "{err}");
    }
}
