//! Field ownership of a mirror Service the writer created.
//!
//! A new mirror is created with a POST (so that a user's Service of its
//! name makes the write fail), which records its fields under this
//! writer's name with the operation `Update`. Later writes are
//! server-side applies, which remove only the fields their manager owns
//! as `Apply`: a field the create set and a later mirror no longer has
//! would stay. Rather than a third write after every create, the first
//! apply that finds the create's entry folds it into the apply's entry
//! ([`fold_created`]) and applies again: creating a mirror costs two
//! writes (Service and slice), and only its first change pays for this.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::Value;

/// `fields` with `manager`'s `Update` entry (its create) merged into its
/// `Apply` entry; `None` when there is no such `Update` entry.
pub fn fold_created(
    fields: &[ManagedFieldsEntry],
    manager: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let mine = |f: &ManagedFieldsEntry, op: &str| {
        f.manager.as_deref() == Some(manager)
            && f.operation.as_deref() == Some(op)
            && f.subresource.as_deref().unwrap_or_default().is_empty()
    };
    let created = fields.iter().find(|f| mine(f, "Update"))?;
    let mut out: Vec<ManagedFieldsEntry> = fields
        .iter()
        .filter(|f| !mine(f, "Update"))
        .cloned()
        .collect();
    match out.iter_mut().find(|f| mine(f, "Apply")) {
        Some(applied) => {
            let mut merged = applied
                .fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or(Value::Object(Default::default()));
            if let Some(c) = &created.fields_v1 {
                merge(&mut merged, &c.0);
            }
            applied.fields_v1 = Some(FieldsV1(merged));
        }
        None => {
            let mut entry = created.clone();
            entry.operation = Some("Apply".into());
            out.push(entry);
        }
    }
    Some(out)
}

/// A field set (`fieldsV1`: a tree of objects) holding both trees' fields.
fn merge(into: &mut Value, from: &Value) {
    // Leaves are `{}` markers: only objects hold anything to merge.
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => merge(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, op: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(FieldsV1(fields)),
            fields_type: Some("FieldsV1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_creates_fields_join_the_applied_ones() {
        let fields = [
            entry(
                "mirror",
                "Update",
                json!({"f:metadata": {"f:annotations": {".": {}, "f:note": {}}, "f:labels": {"f:app": {}}}}),
            ),
            entry(
                "kubectl",
                "Update",
                json!({"f:metadata": {"f:labels": {"f:x": {}}}}),
            ),
            entry(
                "mirror",
                "Apply",
                json!({"f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}, "f:spec": {"f:ports": {}}}),
            ),
        ];
        let out = fold_created(&fields, "mirror").expect("a create to fold");
        assert_eq!(out.len(), 2, "the create's entry goes: {out:#?}");
        assert_eq!(
            out[0].manager.as_deref(),
            Some("kubectl"),
            "others stay as they are"
        );
        let applied = out[1].fields_v1.as_ref().unwrap().0.clone();
        assert_eq!(
            applied,
            json!({"f:metadata": {
                "f:annotations": {".": {}, "f:note": {}},
                "f:labels": {"f:app": {}, "f:tier": {}},
            }, "f:spec": {"f:ports": {}}})
        );
    }

    #[test]
    fn a_create_with_no_apply_yet_becomes_the_apply() {
        let fields = [entry("mirror", "Update", json!({"f:spec": {}}))];
        let out = fold_created(&fields, "mirror").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operation.as_deref(), Some("Apply"));
    }

    #[test]
    fn nothing_to_fold_without_the_create() {
        let fields = [
            entry("mirror", "Apply", json!({"f:spec": {}})),
            entry("someone", "Update", json!({"f:spec": {}})),
        ];
        assert_eq!(fold_created(&fields, "mirror"), None);
        let mut status = entry("mirror", "Update", json!({"f:status": {}}));
        status.subresource = Some("status".into());
        assert_eq!(
            fold_created(&[status], "mirror"),
            None,
            "a status write is not the create"
        );
    }
}
