//! A rule's keys that read Jira's workflow history: `[rule.stage_labels]` (Jira status → GitLab
//! label, replayed as label events at the transitions' times), `created_from` and `closed_from`
//! (where time to restore starts and ends).
//!
//! Only the values live here; reading the changelog and replaying it is the engine's.

use std::collections::BTreeMap;

use super::{ConfigError, invalid};

/// Where the GitLab object's `created_at` comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CreatedFrom {
    /// Jira's `created` (`"created"`, the default).
    #[default]
    Created,
    /// A date or date-time field (`"field:customfield_10042"`), such as "impact start"; an empty
    /// field falls back to `created`.
    Field(String),
}

/// What counts as the moment the issue was resolved (GitLab's `closed_at`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClosedFrom {
    /// Jira's resolution time (`"resolution"`, the default).
    #[default]
    Resolution,
    /// The latest entry into this status (`"status:Mitigated"`); the issue counts as open
    /// again once it moves back to a status that is not Done.
    Status(String),
    /// A date or date-time field (`"field:customfield_10043"`); an empty field falls back to
    /// the resolution time.
    Field(String),
}

/// A rule's history keys, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Jira status name → GitLab label.
    pub stage_labels: BTreeMap<String, String>,
    pub created_from: CreatedFrom,
    pub closed_from: ClosedFrom,
}

impl HistoryConfig {
    /// Returns true if and only if the rule needs the issues' status transitions (stage labels,
    /// or `closed_from = "status:…"`): only then is Jira's changelog read.
    pub fn needs_transitions(&self) -> bool {
        !self.stage_labels.is_empty() || matches!(self.closed_from, ClosedFrom::Status(_))
    }

    /// Returns true if and only if the rule reads anything beyond Jira's `created` and
    /// resolution time.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The Jira field ids the rule reads (`field:<id>`), for the search to ask for.
    pub fn field_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let CreatedFrom::Field(id) = &self.created_from {
            ids.push(id.clone());
        }
        if let ClosedFrom::Field(id) = &self.closed_from {
            ids.push(id.clone());
        }
        ids
    }

    /// The stage label of the status called `status`, if it is mapped.
    pub fn stage_label(&self, status: &str) -> Option<&str> {
        self.stage_labels.get(status).map(String::as_str)
    }
}

/// A Jira field id as `field:<id>` names it: `customfield_10042`, or a system field's id.
fn field_id(key: &str, value: &str, id: &str) -> Result<String, ConfigError> {
    let id = id.trim();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(invalid(
            key,
            format!(
                "{value:?} does not name a Jira field id: use field:<id>, such as \
                 field:customfield_10042"
            ),
        ));
    }
    Ok(id.to_owned())
}

/// Validates the history keys of a rule; `k` names a key of the rule in messages, `alert` says
/// whether the rule's target is an alert (which has no labels and no closing time to move).
pub(super) fn validate_history(
    k: &dyn Fn(&str) -> String,
    alert: bool,
    stage_labels: &BTreeMap<String, String>,
    created_from: Option<&str>,
    closed_from: Option<&str>,
) -> Result<HistoryConfig, ConfigError> {
    let mut out = HistoryConfig::default();
    for (status, label) in stage_labels {
        let key = k(&format!("stage_labels.{status:?}"));
        if status.trim().is_empty() {
            return Err(invalid(key, "the Jira status name must not be empty"));
        }
        let label = label.trim();
        if label.is_empty() || label.contains(',') {
            return Err(invalid(
                key,
                format!("{label:?} is not a label (empty, or holds a comma)"),
            ));
        }
        out.stage_labels
            .insert(status.trim().to_owned(), label.to_owned());
    }
    if let Some(v) = created_from {
        let key = k("created_from");
        out.created_from = match v.trim() {
            "created" => CreatedFrom::Created,
            s => match s.strip_prefix("field:") {
                Some(id) => CreatedFrom::Field(field_id(&key, s, id)?),
                None => {
                    return Err(invalid(
                        key,
                        format!("{s:?} is not a source: use \"created\" or \"field:<id>\""),
                    ));
                }
            },
        };
    }
    if let Some(v) = closed_from {
        let key = k("closed_from");
        out.closed_from = match v.trim() {
            "resolution" => ClosedFrom::Resolution,
            s => {
                if let Some(id) = s.strip_prefix("field:") {
                    ClosedFrom::Field(field_id(&key, s, id)?)
                } else if let Some(name) = s.strip_prefix("status:") {
                    if name.trim().is_empty() {
                        return Err(invalid(key, "status: must name a Jira status"));
                    }
                    ClosedFrom::Status(name.trim().to_owned())
                } else {
                    return Err(invalid(
                        key,
                        format!(
                            "{s:?} is not a source: use \"resolution\", \"status:<name>\" or \
                             \"field:<id>\""
                        ),
                    ));
                }
            }
        };
    }
    if alert && !out.is_default() {
        let which = if !out.stage_labels.is_empty() {
            "stage_labels"
        } else if out.created_from != CreatedFrom::Created {
            "created_from"
        } else {
            "closed_from"
        };
        return Err(invalid(
            k(which),
            "only applies to target = \"incident\" or \"issue\" (an alert has no labels or \
             closing time to set)",
        ));
    }
    Ok(out)
}
