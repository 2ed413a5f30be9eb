//! Backend names resolved the way Kubernetes DNS resolves a service name from a pod in
//! the split's namespace.

use super::ServiceRef;

/// DNS names are at most 253 characters (RFC 1035, without the trailing dot).
const MAX_NAME: usize = 253;
/// DNS labels are at most 63 characters.
const MAX_LABEL: usize = 63;

/// Resolves `name` as written in a split, or explains in a short phrase why it can't.
///
/// - `svc` is in `namespace`;
/// - `svc.ns`, `svc.ns.svc` and `svc.ns.svc.<cluster_domain>` (optionally with a
///   trailing dot) are in `ns`.
pub(super) fn parse(
    name: &str,
    namespace: &str,
    cluster_domain: &str,
) -> Result<ServiceRef, String> {
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }

    let (body, absolute) = match name.strip_suffix('.') {
        Some(body) => (body, true),
        None => (name, false),
    };
    if body.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} characters"));
    }

    let labels: Vec<&str> = body.split('.').collect();
    for label in &labels {
        check_label(label)?;
    }

    let (service, ns) = match labels.as_slice() {
        [service] if !absolute => (*service, namespace),
        [service, ns] if !absolute => (*service, *ns),
        [service, ns, "svc"] if !absolute => (*service, *ns),
        [service, ns, "svc", domain @ ..] if !domain.is_empty() => {
            let domain = domain.join(".");
            let want = cluster_domain.trim_end_matches('.');
            if !domain.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "the domain {domain:?} is not the cluster domain {want:?}"
                ));
            }
            (*service, *ns)
        }
        [_] | [_, _] | [_, _, "svc"] => {
            return Err(
                "a trailing dot needs the full name <service>.<namespace>.svc.<cluster-domain>"
                    .to_string(),
            );
        }
        _ => {
            return Err(
                "expected <service>, <service>.<namespace>, <service>.<namespace>.svc or \
                 <service>.<namespace>.svc.<cluster-domain>"
                    .to_string(),
            );
        }
    };

    // Service names are DNS-1035 labels: unlike namespaces they can't start with a digit.
    if !service.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "the service name {service:?} must start with a letter"
        ));
    }

    Ok(ServiceRef::new(ns, service))
}

/// Checks one DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("the name has an empty label".to_string());
    }
    if label.len() > MAX_LABEL {
        return Err(format!(
            "the label {label:?} is longer than {MAX_LABEL} characters"
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "the label {label:?} may only hold lowercase letters, digits and '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "the label {label:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}
