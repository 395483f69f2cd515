//! Unit tests for `config`: loading, defaults, and that each validation error names its key.

use super::*;

/// A config whose secrets come from files in `dir`, with `extra` appended.
fn config_text(dir: &Path, extra: &str) -> String {
    std::fs::write(dir.join("jira"), "jira-secret\n").unwrap();
    std::fs::write(dir.join("gitlab"), "gitlab-secret\n").unwrap();
    format!(
        r#"
[jira]
url = "https://example.atlassian.net"
user = "bot@example.com"
token_file = "{jira}"

[gitlab]
url = "https://gitlab.com"
token_file = "{gitlab}"
{extra}
"#,
        jira = dir.join("jira").display(),
        gitlab = dir.join("gitlab").display(),
    )
}

const RULE: &str = r#"
[[rule]]
name = "ops"
jql = "project = OPS"
target = "incident"
gitlab_project = "acme/ops"
"#;

fn load(extra: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    Config::from_toml(&config_text(dir.path(), extra), Path::new("config.toml"))
}

/// The shipped, commented `config.toml` parses and validates (with its secrets supplied).
#[test]
fn shipped_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../config.toml");
    // Point the example's secrets at files so the test needs no environment.
    std::fs::write(dir.path().join("t"), "x").unwrap();
    let f = dir.path().join("t").display().to_string();
    let text = text
        .replace(
            "token_env = \"JIRA_TOKEN\"",
            &format!("token_file = \"{f}\""),
        )
        .replace(
            "token_env = \"GITLAB_TOKEN\"",
            &format!("token_file = \"{f}\""),
        )
        .replace(
            "alert_token_env = \"GITLAB_ALERT_TOKEN\"",
            &format!("alert_token_file = \"{f}\""),
        );
    let cfg = Config::from_toml(&text, Path::new("config.toml"))
        .unwrap_or_else(|e| panic!("the shipped config.toml must validate: {e}"));
    assert!(
        !cfg.rules.is_empty(),
        "the example must show at least one rule"
    );
}

/// Defaults: gitlab.com is paced under its published limits; lookback is ten minutes.
#[test]
fn defaults_are_right_for_gitlab_com() {
    let cfg = load(RULE).unwrap();
    assert_eq!(cfg.gitlab.pace.creates_per_minute, Some(180));
    assert_eq!(cfg.gitlab.pace.searches_per_minute, Some(9));
    assert_eq!(cfg.sync.lookback, Duration::from_secs(600));
    assert_eq!(
        cfg.jira.deployment,
        Deployment::Cloud,
        "atlassian.net means Cloud"
    );
    assert_eq!(cfg.rules[0].cron, "0 */2 * * * *");
    assert_eq!(
        cfg.rules[0].severity_of(Some("Highest")),
        Severity::Critical
    );
}

/// An unknown key is an error that names the key.
#[test]
fn unknown_key_is_named() {
    let err = load(&format!("{RULE}jqll = \"x\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jqll"),
        "the message must name the misspelt key: {err}"
    );
}

/// Validation errors name the rule and the field.
#[rstest::rstest]
#[case::bad_target("target = \"incident\"", "target = \"bug\"", "target")]
#[case::empty_jql("jql = \"project = OPS\"", "jql = \" \"", "jql")]
#[case::order_by(
    "jql = \"project = OPS\"",
    "jql = \"project = OPS ORDER BY key\"",
    "ORDER BY"
)]
#[case::bad_since(
    "target = \"incident\"",
    "target = \"incident\"\nsince = \"yesterday\"",
    "since"
)]
#[case::bad_cron(
    "target = \"incident\"",
    "target = \"incident\"\ncron = \"every minute\"",
    "cron"
)]
#[case::alert_without_url("target = \"incident\"", "target = \"alert\"", "alert_url")]
fn invalid_rule_values_are_named(#[case] from: &str, #[case] to: &str, #[case] named: &str) {
    let err = load(&RULE.replace(from, to)).unwrap_err().to_string();
    assert!(err.contains(named), "{err:?} should name {named}");
    assert!(err.contains("\"ops\""), "{err:?} should name the rule");
}

/// A bad URL names `jira.url`.
#[test]
fn bad_url_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), RULE).replace("https://example.atlassian.net", "not a url");
    let err = Config::from_toml(&text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("jira.url"), "{err}");
}

/// No rules, and duplicate rule names, are refused.
#[test]
fn rules_must_exist_and_be_unique() {
    assert!(load("").unwrap_err().to_string().contains("rule"));
    let err = load(&format!("{RULE}{RULE}")).unwrap_err().to_string();
    assert!(err.contains("unique"), "{err}");
}

/// A missing secret file names the key and the file, never a value.
#[test]
fn missing_secret_names_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), RULE);
    std::fs::remove_file(dir.path().join("gitlab")).unwrap();
    let err = Config::from_toml(&text, Path::new("c.toml")).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("gitlab.token_file"), "{chain}");
}

/// Data Center without a user authenticates with a Bearer PAT.
#[test]
fn datacenter_without_user_is_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), RULE)
        .replace(
            "https://example.atlassian.net",
            "https://jira.example.com/jira",
        )
        .replace("user = \"bot@example.com\"\n", "");
    let cfg = Config::from_toml(&text, Path::new("c.toml")).unwrap();
    assert_eq!(cfg.jira.deployment, Deployment::DataCenter);
    assert!(matches!(cfg.jira.auth, JiraAuth::Bearer(_)));
    assert_eq!(
        cfg.jira.url.as_str(),
        "https://jira.example.com/jira/",
        "context path kept"
    );
    assert!(
        !format!("{cfg:?}").contains("jira-secret"),
        "Debug must not show secrets"
    );
}
