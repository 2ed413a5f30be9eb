//! The check helpers that `tandem check` reports with.

use super::*;
use crate::checks::{self, CheckOutcome};

#[test]
fn check_helpers() {
    let root = mk_root();
    let year = mk_issuer(&root);
    let month = {
        let mut r = req("month", Profile::IntermediateCa, Some(&root));
        r.not_after = Some("720h".parse().unwrap());
        create(&r).unwrap()
    };
    let weak = weak_rsa_ca(&root);
    let other = root_named("other.example");
    let short_root = {
        let mut r = req("short-root", Profile::RootCa, None);
        r.not_after = Some("720h".parse().unwrap());
        create(&r).unwrap()
    };

    assert!(matches!(
        checks::issuer_valid(&year.cert_pem, NOW),
        CheckOutcome::Ok(_)
    ));
    let warn = checks::issuer_valid(&month.cert_pem, NOW);
    assert!(matches!(warn, CheckOutcome::Warn(_)), "{warn:?}");
    assert!(warn.message().contains("expires in 30 days"), "{warn:?}");
    let gone = checks::issuer_valid(&month.cert_pem, NOW + Duration::days(31));
    assert!(
        gone.is_fail() && gone.message().contains("expired"),
        "{gone:?}"
    );

    assert!(matches!(
        checks::anchors_valid(&root.cert_pem, NOW),
        CheckOutcome::Ok(_)
    ));
    let warn = checks::anchors_valid(&bundle(&[&root, &short_root]), NOW);
    assert!(
        matches!(&warn, CheckOutcome::Warn(m) if m.contains("CN=short-root")),
        "{warn:?}"
    );

    let ok = checks::anchors_parse(&bundle(&[&root, &other]));
    assert_eq!(
        ok,
        CheckOutcome::Ok(
            "2 trust anchor(s): CN=root.linkerd.cluster.local; CN=other.example".into()
        )
    );
    assert!(checks::anchors_parse("nope").is_fail());
    assert!(checks::anchors_parse(&root.key_pem).is_fail());

    assert!(matches!(
        checks::issuer_signed_by_anchor(&root.cert_pem, &year.cert_pem),
        CheckOutcome::Ok(_)
    ));
    let fail = checks::issuer_signed_by_anchor(&other.cert_pem, &year.cert_pem);
    assert!(
        fail.is_fail() && fail.message().contains("not signed by any trust anchor"),
        "{fail:?}"
    );

    assert!(
        matches!(checks::issuer_algorithm(&year.cert_pem), CheckOutcome::Ok(m) if m.contains("ECDSA P-256"))
    );
    let fail = checks::issuer_algorithm(&weak.cert_pem);
    assert!(
        fail.is_fail() && fail.message().contains("1024 bits"),
        "{fail:?}"
    );
    assert!(checks::anchors_algorithm(&bundle(&[&root, &weak])).is_fail());

    let all = checks::run_all(&root.cert_pem, &year.cert_pem, NOW);
    assert_eq!(all.len(), 6);
    assert!(
        all.iter().all(|c| matches!(c.outcome, CheckOutcome::Ok(_))),
        "{all:?}"
    );
    let all = checks::run_all(&other.cert_pem, &month.cert_pem, NOW);
    assert!(all[3].outcome.is_fail(), "{all:?}");
    assert!(matches!(all[4].outcome, CheckOutcome::Warn(_)), "{all:?}");
}
