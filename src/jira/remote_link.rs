//! The only writes the sync makes to Jira, and only with `[jira] link_back`: a remote link on
//! an issue pointing at its GitLab object, and (for `check`) the account's permissions.
//!
//! Wire format, from Atlassian's OpenAPI (`swagger-v3.v3.json`, operation
//! `createOrUpdateRemoteIssueLink`, `POST /rest/api/3/issue/{issueIdOrKey}/remotelink`; the
//! same resource under `/rest/api/2/` on Data Center, developer.atlassian.com "Jira REST API for
//! Remote Issue Links"): a `RemoteIssueLinkRequest` is `globalId`, `application {type, name}`,
//! `relationship` and `object` (`RemoteObject`: `url` and `title` required, `summary`, `icon`,
//! `status {resolved, icon}`). "If a `globalId` is provided and a remote issue link with that
//! global ID is found it is updated. Any fields without values in the request are set to null.
//! Otherwise, the remote issue link is created": so every field the sync sets is sent every
//! time. It answers 200 (updated) or 201 (created) with `RemoteIssueLinkIdentifies`, 400 for an
//! invalid request, 403 "if the user does not have permission to link issues", 404 "if the issue
//! is not found or the user does not have permission to view the issue". It needs the "Browse
//! projects" and "Link issues" project permissions.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{JiraClient, JiraError};
use crate::domain::RemoteLink;
use crate::http::RequestKind;

/// The `application` of every link the sync makes: Jira groups links by it and shows its name
/// as the icon's tooltip.
const APPLICATION_TYPE: &str = "com.gitlab";
const APPLICATION_NAME: &str = "GitLab";

/// Above the links, what the issue is to them (Jira's default is "links to").
const RELATIONSHIP: &str = "replicated to";

/// The project permissions a remote link needs, by their keys in `mypermissions`, with the
/// names Jira's permission schemes show.
pub const LINK_PERMISSIONS: [(&str, &str); 2] = [
    ("BROWSE_PROJECTS", "Browse projects"),
    ("LINK_ISSUES", "Link issues"),
];

/// `Permissions`: permission key → `UserPermission`.
#[derive(Deserialize)]
struct Permissions {
    #[serde(default)]
    permissions: HashMap<String, UserPermission>,
}

/// `UserPermission`, as far as the sync reads it.
#[derive(Deserialize)]
struct UserPermission {
    #[serde(default, rename = "havePermission")]
    have_permission: bool,
}

/// The request body for `link`: the whole `RemoteIssueLinkRequest`, every field the sync sets.
pub fn remote_link_body(link: &RemoteLink) -> serde_json::Value {
    json!({
        "globalId": link.global_id,
        "application": { "type": APPLICATION_TYPE, "name": APPLICATION_NAME },
        "relationship": RELATIONSHIP,
        "object": {
            "url": link.url,
            "title": link.title,
            "status": { "resolved": link.resolved },
        },
    })
}

impl JiraClient {
    /// Creates or updates (by its global id) the remote link `link`.
    ///
    /// # Errors
    /// [`JiraError::LinkForbidden`] for a 403 (the account lacks "Browse projects" or "Link
    /// issues", or issue linking is off), [`JiraError::LinkIssueGone`] for a 404, and the
    /// errors of any request.
    pub(super) async fn put_link(&self, link: &RemoteLink) -> Result<(), JiraError> {
        let path = format!(
            "{}issue/{}/remotelink",
            self.api(),
            url::form_urlencoded::byte_serialize(link.issue.as_bytes()).collect::<String>()
        );
        // Not idempotent for the HTTP layer's retries in general, but this one is: the same
        // global id updates the one link. A lost answer is retried by the next run anyway.
        match self
            .call(
                Method::POST,
                &path,
                Some(remote_link_body(link)),
                RequestKind::Idempotent,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(JiraError::Forbidden { message }) => Err(JiraError::LinkForbidden {
                jira_key: link.jira_key.to_string(),
                message,
            }),
            Err(JiraError::NotFound { .. }) => Err(JiraError::LinkIssueGone {
                jira_key: link.jira_key.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Whether the account has each of `keys` (permission keys such as `LINK_ISSUES`) in the
    /// project `project_key`, or in any project when `None`: `GET
    /// /rest/api/{3,2}/mypermissions?projectKey=…&permissions=…`, answered as `Permissions`
    /// (`permissions.{KEY}.havePermission`, Atlassian's OpenAPI `getMyPermissions`).
    ///
    /// # Errors
    /// The request failed, or the answer could not be read.
    pub async fn my_permissions(
        &self,
        project_key: Option<&str>,
        keys: &[&str],
    ) -> Result<BTreeMap<String, bool>, JiraError> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(p) = project_key {
            query.append_pair("projectKey", p);
        }
        query.append_pair("permissions", &keys.join(","));
        let path = format!("{}mypermissions?{}", self.api(), query.finish());
        let response = self
            .call(Method::GET, &path, None, RequestKind::Idempotent)
            .await?;
        let answer: Permissions = response.json().map_err(|source| JiraError::Decode {
            endpoint: format!("/{}mypermissions", self.api()),
            source,
        })?;
        Ok(keys
            .iter()
            .map(|k| {
                let have = answer
                    .permissions
                    .get(*k)
                    .is_some_and(|p| p.have_permission);
                ((*k).to_owned(), have)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JiraKey;

    /// The body names every field the sync sets, so an update never nulls one of them.
    #[test]
    fn body_is_the_whole_link() {
        let link = RemoteLink {
            issue: "10001".into(),
            jira_key: JiraKey::parse("OPS-1").expect("a key"),
            global_id: "gitlab:gitlab.example.com:7:3".into(),
            url: "https://gitlab.example.com/acme/ops/-/issues/3".into(),
            title: "acme/ops#3 [OPS-1] down".into(),
            resolved: true,
        };
        let body = remote_link_body(&link);
        assert_eq!(body["globalId"], "gitlab:gitlab.example.com:7:3");
        assert_eq!(body["application"]["name"], "GitLab");
        assert_eq!(body["application"]["type"], APPLICATION_TYPE);
        assert_eq!(body["relationship"], RELATIONSHIP);
        assert_eq!(
            body["object"]["url"],
            "https://gitlab.example.com/acme/ops/-/issues/3"
        );
        assert_eq!(body["object"]["title"], "acme/ops#3 [OPS-1] down");
        assert_eq!(body["object"]["status"]["resolved"], true);
    }
}
