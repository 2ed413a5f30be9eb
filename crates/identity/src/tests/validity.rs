//! Validity windows: `--not-before`/`--not-after` specs, defaults cut to the
//! CA's expiry, and empty windows.

use super::*;

#[test]
fn validity_windows() {
    let root = mk_root();
    // --not-before -5m and an absolute --not-after.
    let mut r = req("web.example", Profile::Leaf, Some(&root));
    r.not_before = Some("-5m".parse().unwrap());
    r.not_after = Some("2026-06-03T00:00:00Z".parse().unwrap());
    let info = inspect(&create(&r).unwrap().cert_pem).unwrap();
    assert_eq!(info.not_before, NOW - Duration::minutes(5));
    assert_eq!(info.not_after, datetime!(2026-06-03 00:00:00 UTC));

    // Default lifetimes are cut to the CA's expiry instead of failing:
    // an intermediate made a minute after its root, and a leaf under a 1h CA.
    let mut r = req("int", Profile::IntermediateCa, Some(&root));
    r.now = NOW + Duration::minutes(1);
    let info = inspect(&create(&r).unwrap().cert_pem).unwrap();
    assert_eq!(info.not_after, inspect(&root.cert_pem).unwrap().not_after);
    let mut r = req("short", Profile::IntermediateCa, Some(&root));
    r.not_after = Some("1h".parse().unwrap());
    let short = create(&r).unwrap();
    let info = inspect(
        &create(&req("l", Profile::Leaf, Some(&short)))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert_eq!(info.not_after, NOW + Duration::hours(1));

    // An explicit --not-after beyond the CA is refused, naming both times.
    let mut r = req("l", Profile::Leaf, Some(&short));
    r.not_after = Some("2h".parse().unwrap());
    let err = create(&r).unwrap_err();
    assert!(matches!(err, Error::BeyondIssuerExpiry { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("2026-06-01T14:00:00Z"), "{msg}");
    assert!(msg.contains("2026-06-01T13:00:00Z"), "{msg}");
    assert!(msg.contains("ca.crt"), "{msg}");

    // An empty window.
    let mut r = req("l", Profile::RootCa, None);
    r.not_after = Some("-1h".parse().unwrap());
    assert!(matches!(create(&r), Err(Error::EmptyValidity { .. })));
}
