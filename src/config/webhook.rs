//! `[webhook]`: the service's receiver of Jira webhooks, a "sync now" signal. Its table as the
//! file writes it ([`RawWebhook`]), validated into [`WebhookConfig`].
//!
//! The secret is not read here: only the service (and `check`) needs it, so `--once` and
//! `backfill` from cron do not fail for a secret that lives only in the service's environment.
//! [`WebhookConfig::read_secret`] reads it when the service starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::secret::{Secret, SecretSource};

/// `[webhook]`: Jira webhooks wake the rules they concern at once, in service mode (`run`);
/// `--once` and `backfill` ignore the table. Off unless the table is there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The address and port the service receives `POST /webhook/jira` on (`127.0.0.1:8787`; an
    /// IP address, `[::1]:8787` for IPv6). Put a reverse proxy with TLS in front of it.
    pub listen: String,
    /// The environment variable holding the webhook's secret (the one given to Jira when the
    /// webhook was registered): requests not signed with it are refused.
    pub secret_env: Option<String>,
    /// Or a file holding it (relative paths are looked up in `$CREDENTIALS_DIRECTORY`).
    pub secret_file: Option<PathBuf>,
}

/// `[webhook]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where the service receives `POST /webhook/jira`.
    pub listen: SocketAddr,
    /// Where the secret comes from.
    pub secret: SecretSource,
    /// The setting naming it (`webhook.secret_file`), for messages.
    pub secret_key: &'static str,
}

/// What the webhook secret is, in messages about it.
const WHAT: &str = "Jira webhook secret";

impl WebhookConfig {
    /// Reads the secret.
    ///
    /// # Errors
    /// The variable is unset or empty, or the file cannot be read or is empty; the error names
    /// the setting.
    pub fn read_secret(&self) -> Result<Secret, ConfigError> {
        self.secret
            .read(WHAT)
            .map_err(|source| ConfigError::Secret {
                key: self.secret_key.to_owned(),
                source,
            })
    }
}

/// `[webhook]`: `listen` an IP address with a port other than 0, and exactly one of
/// `secret_env` and `secret_file` (a webhook without a secret could be sent by anyone).
pub(super) fn validate_webhook(raw: &RawWebhook) -> Result<WebhookConfig, ConfigError> {
    let s = raw.listen.trim();
    let listen: SocketAddr = s.parse().map_err(|_| {
        invalid(
            "webhook.listen",
            format!(
                "{s:?} is not an IP address and port such as 127.0.0.1:8787 (or [::1]:8787; a \
                 host name is not accepted)"
            ),
        )
    })?;
    if listen.port() == 0 {
        return Err(invalid(
            "webhook.listen",
            "port 0 would pick a random port Jira could not know: name the port",
        ));
    }
    let (secret, secret_key) = match (&raw.secret_env, &raw.secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "webhook.secret_env",
                "set either webhook.secret_env or webhook.secret_file, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "webhook.secret_env",
                "set webhook.secret_env or webhook.secret_file: the service accepts only \
                 webhooks signed with the secret registered in Jira",
            ));
        }
        // Not echoed: a value that is no variable name is most likely the secret itself.
        (Some(e), None) if !super::validate::is_env_name(e.trim()) => {
            return Err(invalid(
                "webhook.secret_env",
                "must be the name of an environment variable (letters, digits and _), not the \
                 secret: put the secret in that variable, or in a file named by secret_file",
            ));
        }
        (Some(e), None) => (SecretSource::Env(e.trim().to_owned()), "webhook.secret_env"),
        (None, Some(f)) => (SecretSource::File(f.clone()), "webhook.secret_file"),
    };
    Ok(WebhookConfig {
        listen,
        secret,
        secret_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str, env: Option<&str>, file: Option<&str>) -> RawWebhook {
        RawWebhook {
            listen: listen.to_owned(),
            secret_env: env.map(str::to_owned),
            secret_file: file.map(PathBuf::from),
        }
    }

    /// A valid table names its address and where its secret comes from; every mistake names
    /// the key and never quotes what may be the secret.
    #[test]
    fn the_table_is_validated_key_by_key() {
        let ok = validate_webhook(&raw("127.0.0.1:8787", Some("JIRA_WEBHOOK_SECRET"), None))
            .expect("valid");
        assert_eq!(ok.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(ok.secret, SecretSource::Env("JIRA_WEBHOOK_SECRET".into()));
        assert_eq!(ok.secret_key, "webhook.secret_env");
        let file = validate_webhook(&raw("[::1]:9000", None, Some("webhook-secret"))).unwrap();
        assert_eq!(file.secret_key, "webhook.secret_file");
        for (bad, key) in [
            (raw("localhost:8787", Some("S"), None), "webhook.listen"),
            (raw("127.0.0.1:0", Some("S"), None), "webhook.listen"),
            (raw("127.0.0.1:8787", None, None), "webhook.secret_env"),
            (
                raw("127.0.0.1:8787", Some("S"), Some("f")),
                "webhook.secret_env",
            ),
            (
                raw("127.0.0.1:8787", Some("s3cr3t-value!"), None),
                "webhook.secret_env",
            ),
        ] {
            let e = validate_webhook(&bad).expect_err("refused").to_string();
            assert!(e.starts_with(key), "{e}");
            assert!(!e.contains("s3cr3t"), "the value is not echoed: {e}");
        }
    }

    /// The secret is read when asked, and a missing one names the setting.
    #[test]
    fn the_secret_is_read_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook-secret");
        std::fs::write(&path, "shh\n").unwrap();
        let cfg = validate_webhook(&raw("127.0.0.1:8787", None, path.to_str())).unwrap();
        assert_eq!(cfg.read_secret().unwrap().expose(), "shh");
        std::fs::remove_file(&path).unwrap();
        let e = cfg.read_secret().expect_err("gone").to_string();
        assert!(e.starts_with("webhook.secret_file"), "{e}");
    }
}
