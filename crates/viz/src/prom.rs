//! Prometheus' query API: parsing its answers (pure), and asking it
//! through the Kubernetes API server's service proxy, so that `viz stat`
//! works from a workstation with only a kubeconfig.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Error;

/// Where `viz install` puts Prometheus.
pub const NAMESPACE: &str = "tandem-viz";
pub const SERVICE: &str = "prometheus";
pub const PORT: u16 = 9090;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorElement {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// The samples of an instant query's answer (`/api/v1/query`). A scalar
/// answer is one sample without labels; `NaN` and infinities are kept (a
/// quantile of no requests is `NaN`: the renderer prints `-`).
pub fn parse_vector(query: &str, body: &str) -> Result<Vec<Sample>, Error> {
    let bad = |detail: String| Error::BadResponse {
        query: query.to_string(),
        detail,
    };
    let r: Response = serde_json::from_str(body)
        .map_err(|e| bad(format!("not Prometheus' JSON ({e}): {}", snippet(body))))?;
    if r.status != "success" {
        return Err(Error::Query {
            query: query.to_string(),
            error_type: r.error_type.unwrap_or_default(),
            error: r.error.unwrap_or_default(),
        });
    }
    let data = r.data.ok_or_else(|| bad("no data".into()))?;
    let value = |v: &str| -> Result<f64, Error> {
        v.parse::<f64>()
            .map_err(|_| bad(format!("the value {v:?} is not a number")))
    };
    match data.result_type.as_str() {
        "vector" => {
            let elements: Vec<VectorElement> = serde_json::from_value(data.result)
                .map_err(|e| bad(format!("a malformed vector: {e}")))?;
            elements
                .into_iter()
                .map(|e| {
                    Ok(Sample {
                        value: value(&e.value.1)?,
                        labels: e.metric,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| bad(format!("a malformed scalar: {e}")))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value(&v)?,
            }])
        }
        other => Err(bad(format!(
            "a {other} result, where an instant vector was expected"
        ))),
    }
}

fn snippet(body: &str) -> String {
    body.chars().take(200).collect()
}

/// The API server path of an instant query through the service proxy.
pub fn proxy_path(query: &str) -> String {
    format!(
        "/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}:{PORT}/proxy/api/v1/query?query={}",
        encode(query)
    )
}

/// Percent-encodes a query parameter's value (RFC 3986 unreserved kept).
fn encode(v: &str) -> String {
    let mut s = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Asks Prometheus through the API server. An API server that answers 404
/// or 503 for the proxy means viz is not installed (or Prometheus not
/// ready): that is said plainly.
pub async fn query(client: &kube::Client, query: &str) -> Result<Vec<Sample>, Error> {
    let request = http::Request::get(proxy_path(query))
        .body(Vec::new())
        .map_err(|e| Error::BadArgument(format!("a query that is no URL ({e}): {query}")))?;
    match client.request_text(request).await {
        Ok(body) => parse_vector(query, &body),
        Err(kube::Error::Api(status)) => {
            // Prometheus' own errors (a bad query: 400, 422) come back as the
            // proxied body; the API server's own say the proxy found nothing.
            match parse_vector(query, &status.message) {
                Ok(samples) => return Ok(samples),
                Err(e @ Error::Query { .. }) => return Err(e),
                Err(_) => {}
            }
            Err(match status.code {
                404 | 503 => Error::NotInstalled {
                    detail: format!("{} ({})", status.message, status.code),
                },
                _ => Error::Kube {
                    what: format!("querying Prometheus: {query}"),
                    source: kube::Error::Api(status),
                },
            })
        }
        Err(source) => Err(Error::Kube {
            what: format!("querying Prometheus: {query}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_scalars_and_errors_are_read() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"deployment":"web","namespace":"app","classification":"success"},"value":[1700000000.1,"12.5"]},
            {"metric":{"deployment":"web"},"value":[1700000000.1,"NaN"]}]}}"#;
        let v = parse_vector("q", body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].label("deployment"), "web");
        assert_eq!(v[0].label("missing"), "");
        assert_eq!(v[0].value, 12.5);
        assert!(v[1].value.is_nan());

        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"3"]}}"#;
        assert_eq!(parse_vector("q", scalar).unwrap()[0].value, 3.0);

        let err = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let e = parse_vector("sum(", err).unwrap_err().to_string();
        assert!(
            e.contains("bad_data") && e.contains("parse error") && e.contains("sum("),
            "{e}"
        );

        for bad in [
            "<html>not found</html>",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        ] {
            let e = parse_vector("q", bad).unwrap_err();
            assert!(matches!(e, Error::BadResponse { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn queries_go_through_the_service_proxy() {
        assert_eq!(
            proxy_path(r#"sum(x{a="b"}) by (c)"#),
            "/api/v1/namespaces/tandem-viz/services/prometheus:9090/proxy/api/v1/query?query=sum%28x%7Ba%3D%22b%22%7D%29%20by%20%28c%29"
        );
    }
}
