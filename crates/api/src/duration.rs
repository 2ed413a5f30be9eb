//! Go-style durations for flags, annotations and resource fields: [`Duration`].
//!
//! The type lives in `tandem-core` (its failover rules parse an annotation with it, and
//! that crate takes no kube), and this is where the rest of tandem takes it from.

pub use tandem_core::duration::{Duration, ParseDurationError, Reason};

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        period: Duration,
        timeout: Option<Duration>,
        plain: String,
    }

    /// A Duration field has the schema of a String field, so a CRD does not change
    /// when one becomes the other.
    #[test]
    fn schema_is_a_plain_string() {
        let schema = serde_json::to_value(schemars::schema_for!(Probe)).unwrap();
        let props = &schema["properties"];
        assert_eq!(props["period"], serde_json::json!({"type": "string"}));
        assert_eq!(props["period"], props["plain"]);
        assert_eq!(
            props["timeout"],
            serde_json::json!({"type": ["string", "null"]})
        );
    }

    #[test]
    fn yaml_keeps_its_shape() {
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"period": "3s", "timeout": "1m30s", "plain": ""}),
        )
        .unwrap();
        assert_eq!(probe.period, Duration::from_secs(3));
        let yaml = crate::yaml(&serde_json::to_value(&probe).unwrap()).unwrap();
        assert!(yaml.contains("period: 3s"), "{yaml}");
        assert!(yaml.contains("timeout: 1m30s"), "{yaml}");
    }
}
