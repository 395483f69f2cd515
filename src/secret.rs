//! Secrets (API tokens, alert keys): held in a newtype whose `Debug` and `Display` never show the
//! value, read from an environment variable or a file (systemd `LoadCredential=`), never from argv.
//!
//! This module owns reading and redacting secrets; it does not decide which secret a client uses.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. Only [`Secret::expose`] shows it, and only HTTP header construction calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (trailing newlines, as files usually end with, are removed).
    pub fn new(value: impl Into<String>) -> Self {
        let mut v: String = value.into();
        while v.ends_with('\n') || v.ends_with('\r') {
            v.pop();
        }
        Self(v)
    }

    /// The value itself. Call only where it goes onto the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns true if and only if `text` contains the secret (used to scrub error bodies).
    pub fn appears_in(&self, text: &str) -> bool {
        !self.0.is_empty() && text.contains(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl SecretSource {
    /// For a file that every user may read (the "others" read bit): the file as it is read and
    /// its mode. Environment variables and private files: `None`.
    pub fn exposed(&self) -> Option<(PathBuf, u32)> {
        #[cfg(unix)]
        if let SecretSource::File(path) = self {
            use std::os::unix::fs::PermissionsExt as _;
            let resolved = resolve_credential_path(path);
            let mode = std::fs::metadata(&resolved).ok()?.permissions().mode() & 0o7777;
            return (mode & 0o004 != 0).then_some((resolved, mode));
        }
        None
    }
}

/// Where a secret comes from, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file's path; a relative path is looked up in `$CREDENTIALS_DIRECTORY` first.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A secret file that every user of the machine may read: where it is, which setting names it,
/// and its mode. The sync uses it all the same, and says so once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposedSecret {
    /// The setting that names the file (`gitlab.token_file`).
    pub key: String,
    /// The file read.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl fmt::Display for ExposedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the secret file {} ({}) is readable by every user of this machine (mode {:04o}): \
             chmod 600 it (640 with a group the sync's user is in)",
            self.path.display(),
            self.key,
            self.mode
        )
    }
}

/// Why a secret could not be read. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set (it should hold the {what})")]
    EnvMissing { name: String, what: &'static str },
    #[error("environment variable {name} is empty (it should hold the {what})")]
    Empty { name: String, what: &'static str },
    #[error("cannot read the {what} from {}", path.display())]
    File {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the file {} is empty (it should hold the {what})", path.display())]
    FileEmpty { path: PathBuf, what: &'static str },
}

impl SecretSource {
    /// Reads the secret. `what` names it in errors ("Jira API token").
    ///
    /// # Errors
    /// The variable is unset or empty, or the file cannot be read or is empty.
    pub fn read(&self, what: &'static str) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if v.trim().is_empty() => Err(SecretError::Empty {
                    name: name.clone(),
                    what,
                }),
                Ok(v) => Ok(Secret::new(v)),
                Err(_) => Err(SecretError::EnvMissing {
                    name: name.clone(),
                    what,
                }),
            },
            SecretSource::File(path) => {
                let resolved = resolve_credential_path(path);
                let text =
                    std::fs::read_to_string(&resolved).map_err(|source| SecretError::File {
                        path: resolved.clone(),
                        what,
                        source,
                    })?;
                let secret = Secret::new(text.trim().to_owned());
                if secret.expose().is_empty() {
                    return Err(SecretError::FileEmpty {
                        path: resolved,
                        what,
                    });
                }
                Ok(secret)
            }
        }
    }
}

/// A relative `token_file` names a systemd credential when `$CREDENTIALS_DIRECTORY` is set.
fn resolve_credential_path(path: &Path) -> PathBuf {
    if path.is_relative()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
    {
        let candidate = Path::new(&dir).join(path);
        if candidate.exists() {
            return candidate;
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("glpat-abcdef\n");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert_eq!(format!("{s}"), "****");
        assert_eq!(
            s.expose(),
            "glpat-abcdef",
            "trailing newline from a file is dropped"
        );
    }

    #[test]
    fn reads_a_file_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "  t0ken \n").unwrap();
        let s = SecretSource::File(p).read("test token").unwrap();
        assert_eq!(s.expose(), "t0ken");
    }

    #[test]
    fn empty_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        std::fs::write(&p, "\n").unwrap();
        let err = SecretSource::File(p.clone())
            .read("test token")
            .unwrap_err();
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    }
}
