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
    std::fs::write(dir.path().join("ca.pem"), TEST_CA).unwrap();
    let ca = dir.path().join("ca.pem").display().to_string();
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
        )
        // The transport keys are documented commented out: they must be keys that parse.
        .replace(
            "# allow_insecure_http = false",
            "allow_insecure_http = false",
        )
        .replace(
            "# ca_file = \"/etc/jira-gitlab-sync/company-ca.pem\"",
            &format!("ca_file = \"{ca}\""),
        )
        // So are the [metrics] keys.
        .replace("# [metrics]", "[metrics]")
        .replace("# listen = ", "listen = ")
        .replace("# textfile = ", "textfile = ")
        // And the [webhook] table's, one of its two secret keys.
        .replace("# [webhook]", "[webhook]")
        .replace("# secret_env = \"JIRA_WEBHOOK_SECRET\"\n", "")
        .replace("# secret_file = ", "secret_file = ");
    let cfg = Config::from_toml(&text, Path::new("config.toml"))
        .unwrap_or_else(|e| panic!("the shipped config.toml must validate: {e}"));
    assert!(
        !cfg.rules.is_empty(),
        "the example must show at least one rule"
    );
    assert_eq!(
        (cfg.jira.extra_roots.len(), cfg.gitlab.extra_roots.len()),
        (1, 1),
        "both sections document ca_file"
    );
    assert!(
        cfg.metrics.listen.is_some() && cfg.metrics.textfile.is_some(),
        "the example documents both [metrics] keys: {:?}",
        cfg.metrics
    );
    assert!(
        cfg.webhook.is_some(),
        "the example documents the [webhook] keys"
    );
}

/// Without `[metrics]` no metrics are kept; its keys are read, a relative textfile beside the
/// config file.
#[test]
fn metrics_are_off_unless_configured() {
    let cfg = load(RULE).unwrap();
    assert!(!cfg.metrics.enabled(), "{:?}", cfg.metrics);
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        &format!("{RULE}\n[metrics]\nlisten = \"127.0.0.1:9898\"\ntextfile = \"m/sync.prom\"\n"),
    );
    let cfg = Config::from_toml(&text, &dir.path().join("config.toml")).unwrap();
    assert_eq!(
        cfg.metrics,
        MetricsConfig {
            listen: Some("127.0.0.1:9898".parse().unwrap()),
            textfile: Some(dir.path().join("m/sync.prom")),
        }
    );
}

/// A bad `[metrics]` value is refused with its key and what would do.
#[rstest::rstest]
#[case::host_name("listen = \"localhost:9898\"", "metrics.listen", "IP address and port")]
#[case::no_port("listen = \"127.0.0.1\"", "metrics.listen", "IP address and port")]
#[case::port_zero("listen = \"127.0.0.1:0\"", "metrics.listen", "port 0")]
#[case::not_prom("textfile = \"/tmp/sync.txt\"", "metrics.textfile", "ending in .prom")]
#[case::directory("textfile = \"/tmp/x.prom/\"", "metrics.textfile", "ending in .prom")]
#[case::unknown_key("port = 9898", "port", "metrics")]
fn bad_metrics_keys_are_named(#[case] line: &str, #[case] key: &str, #[case] says: &str) {
    let err = load(&format!("{RULE}\n[metrics]\n{line}\n")).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains(key) && text.contains(says),
        "{line}: the error names {key} and says {says:?}: {text}"
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
    assert_eq!(cfg.sync.reconcile, Duration::from_secs(3600));
    assert_eq!(
        (cfg.rules[0].on_leave, cfg.rules[0].on_delete),
        (OnLeave::Label, OnDelete::Close)
    );
    assert_eq!(
        cfg.rules[0].severity_of(Some("Highest")),
        Severity::Critical
    );
}

/// `reconcile_secs` takes any value from one second; 0 is refused with its key named.
#[test]
fn reconcile_secs_from_one_second() {
    let cfg = load(&format!("[sync]\nreconcile_secs = 1\n{RULE}")).unwrap();
    assert_eq!(cfg.sync.reconcile, Duration::from_secs(1));
    let err = load(&format!("[sync]\nreconcile_secs = 0\n{RULE}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sync.reconcile_secs"), "{err}");
    let cfg = load(&format!(
        "{RULE}on_leave = \"keep\"\non_delete = \"delete\"\n"
    ))
    .unwrap();
    assert_eq!(
        (cfg.rules[0].on_leave, cfg.rules[0].on_delete),
        (OnLeave::Keep, OnDelete::Delete)
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
#[case::bad_on_leave(
    "target = \"incident\"",
    "target = \"incident\"\non_leave = \"drop\"",
    "on_leave"
)]
#[case::bad_on_delete(
    "target = \"incident\"",
    "target = \"incident\"\non_delete = \"archive\"",
    "on_delete"
)]
#[case::bad_created_from(
    "target = \"incident\"",
    "target = \"incident\"\ncreated_from = \"status:Open\"",
    "created_from"
)]
#[case::bad_closed_from(
    "target = \"incident\"",
    "target = \"incident\"\nclosed_from = \"mitigated\"",
    "closed_from"
)]
#[case::empty_closed_status(
    "target = \"incident\"",
    "target = \"incident\"\nclosed_from = \"status: \"",
    "closed_from"
)]
#[case::bad_field_id(
    "target = \"incident\"",
    "target = \"incident\"\nclosed_from = \"field:impact end\"",
    "closed_from"
)]
#[case::comma_stage_label(
    "gitlab_project = \"acme/ops\"",
    "gitlab_project = \"acme/ops\"\n[rule.stage_labels]\n\"To Do\" = \"a,b\"",
    "stage_labels.\"To Do\""
)]
#[case::alert_stages(
    "target = \"incident\"\ngitlab_project = \"acme/ops\"",
    "target = \"alert\"\ngitlab_project = \"acme/ops\"\nalert_url = \"https://gitlab.example/a.json\"\nalert_token_env = \"PATH\"\n[rule.stage_labels]\n\"To Do\" = \"wf::todo\"",
    "stage_labels"
)]
#[case::timeline_events_on_issues(
    "target = \"incident\"",
    "target = \"issue\"\ntimeline_events = true",
    "timeline_events"
)]
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

/// The config with `from` replaced by `to` (each must occur), validated.
fn load_replacing(edits: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(
        dir.path(),
        &alert_rule("https://gitlab.com/acme/ops/-/alerts/notify/jira/1.json"),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} is in the test config");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(dir.path().join("alert"), "alert-secret\n").unwrap();
    let text = text.replace("{alert}", &dir.path().join("alert").display().to_string());
    Config::from_toml(&text, Path::new("config.toml"))
}

/// An error and its sources, as the command line prints them.
fn chain(e: &ConfigError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// An alert rule posting to `url`, its key in the file `{alert}`.
fn alert_rule(url: &str) -> String {
    format!(
        r#"
[[rule]]
name = "pager"
jql = "project = OPS"
target = "alert"
gitlab_project = "acme/ops"
alert_url = "{url}"
alert_token_file = "{{alert}}"
"#
    )
}

const JIRA_URL: &str = "url = \"https://example.atlassian.net\"";
const GITLAB_URL: &str = "url = \"https://gitlab.com\"";
const ALERT_URL: &str = "alert_url = \"https://gitlab.com/";

/// `http://` is refused for every server URL unless the host is loopback or the section allows
/// it; a rule's `alert_url` follows `[gitlab]`'s `allow_insecure_http`.
#[rstest::rstest]
#[case::jira_http(&[(JIRA_URL, "url = \"http://jira.example.com\"")], Some("jira.url"))]
#[case::gitlab_http(&[(GITLAB_URL, "url = \"http://gitlab.example.com\"")], Some("gitlab.url"))]
#[case::alert_http(&[(ALERT_URL, "alert_url = \"http://gitlab.com/")], Some("rule \"pager\": alert_url"))]
#[case::jira_allowed(
    &[(JIRA_URL, "url = \"http://jira.example.com\"\nallow_insecure_http = true")],
    None
)]
#[case::gitlab_allowed(
    &[(GITLAB_URL, "url = \"http://gitlab.example.com\"\nallow_insecure_http = true")],
    None
)]
#[case::alert_follows_gitlab(
    &[(ALERT_URL, "alert_url = \"http://gitlab.com/"), (GITLAB_URL, "url = \"https://gitlab.com\"\nallow_insecure_http = true")],
    None
)]
#[case::jira_allowance_is_not_gitlabs(
    &[(GITLAB_URL, "url = \"http://gitlab.example.com\""), (JIRA_URL, "url = \"https://example.atlassian.net\"\nallow_insecure_http = true")],
    Some("gitlab.url")
)]
#[case::localhost(&[(JIRA_URL, "url = \"http://localhost:8080/jira\"")], None)]
#[case::loopback_v4(&[(GITLAB_URL, "url = \"http://127.0.0.2:8929\"")], None)]
#[case::loopback_v6(&[(ALERT_URL, "alert_url = \"http://[::1]:8929/")], None)]
#[case::not_loopback(&[(JIRA_URL, "url = \"http://128.0.0.1\"")], Some("jira.url"))]
#[case::localhost_lookalike(&[(JIRA_URL, "url = \"http://localhost.example.com\"")], Some("jira.url"))]
fn http_needs_loopback_or_allow_insecure_http(
    #[case] edits: &[(&str, &str)],
    #[case] refused: Option<&str>,
) {
    match (load_replacing(edits), refused) {
        (Ok(_), None) => {}
        (Err(e), Some(key)) => {
            let msg = chain(&e);
            assert!(msg.starts_with(&format!("{key}: ")), "{msg:?} names {key}");
            assert!(
                msg.contains("allow_insecure_http"),
                "{msg:?} says how to allow it"
            );
        }
        (Ok(_), Some(key)) => panic!("{key} over http:// must be refused"),
        (Err(e), None) => panic!("must be accepted: {e}"),
    }
}

/// Credentials written into a URL are refused, naming the key and echoing neither part.
#[rstest::rstest]
#[case::jira(
    JIRA_URL,
    "url = \"https://bot%40example.com:s3cr3t-T0KEN@example.atlassian.net\"",
    "jira.url"
)]
#[case::gitlab(
    GITLAB_URL,
    "url = \"https://oauth2:s3cr3t-T0KEN@gitlab.com\"",
    "gitlab.url"
)]
#[case::user_only(GITLAB_URL, "url = \"https://s3cr3t-T0KEN@gitlab.com\"", "gitlab.url")]
#[case::alert(
    ALERT_URL,
    "alert_url = \"https://x:s3cr3t-T0KEN@gitlab.com/",
    "rule \"pager\": alert_url"
)]
#[case::unparsable(
    JIRA_URL,
    "url = \"https://bot:s3cr3t-T0KEN@exa mple.com\"",
    "jira.url"
)]
fn credentials_in_urls_are_refused(#[case] from: &str, #[case] to: &str, #[case] key: &str) {
    let msg = chain(&load_replacing(&[(from, to)]).unwrap_err());
    assert!(msg.starts_with(&format!("{key}: ")), "{msg:?} names {key}");
    assert!(
        !msg.contains("s3cr3t") && !msg.contains("bot") && !msg.contains("oauth2"),
        "{msg:?} echoes no credential"
    );
}

/// A file error never quotes the line at fault (it may hold a secret): it names the key as
/// `section.key`, the line and column, and toml's reason without any value.
#[rstest::rstest]
#[case::unknown_key(
    GITLAB_URL,
    "url = \"https://gitlab.com\"\ntoken = \"glpat-s3cr3t\"",
    "gitlab.token"
)]
#[case::wrong_type(
    GITLAB_URL,
    "url = \"https://gitlab.com\"\ntimeout_secs = \"glpat-s3cr3t\"",
    "gitlab.timeout_secs"
)]
#[case::no_equals(
    JIRA_URL,
    "url = \"https://example.atlassian.net\"\ntoken \"glpat-s3cr3t\"",
    "jira"
)]
#[case::unquoted(
    JIRA_URL,
    "url = \"https://example.atlassian.net\"\ntoken = glpat-s3cr3t",
    "jira.token"
)]
#[case::rule_key(
    "target = \"alert\"",
    "target = \"alert\"\npassword = \"glpat-s3cr3t\"",
    "rule[0].password"
)]
#[case::sub_table(
    "target = \"alert\"",
    "target = \"alert\"\n[rule.severity]\nP1 = [\"glpat-s3cr3t\"]",
    "rule[0].severity.P1"
)]
#[case::unknown_table("[gitlab]", "[secrets]\ntoken = \"glpat-s3cr3t\"\n[gitlab]", "secrets")]
fn file_errors_name_the_key_and_echo_no_value(
    #[case] from: &str,
    #[case] to: &str,
    #[case] key: &str,
) {
    let msg = chain(&load_replacing(&[(from, to)]).unwrap_err());
    assert!(
        msg.starts_with(&format!("config.toml: {key} (line ")),
        "{msg:?} names {key}"
    );
    assert!(!msg.contains("s3cr3t"), "{msg:?} echoes no value");
}

/// A token pasted where the name of its environment variable belongs is refused without being
/// echoed.
#[rstest::rstest]
#[case::gitlab_style("token_file = ", "token_env = \"glpat-s3cr3t\"\n# ", "jira.token_env")]
#[case::jira_cloud(
    "token_file = ",
    "token_env = \"ATATT3xFfGF0s3cr3t=2A1B3C4D\"\n# ",
    "jira.token_env"
)]
fn a_token_in_token_env_is_not_echoed(#[case] from: &str, #[case] to: &str, #[case] key: &str) {
    let msg = chain(&load_replacing(&[(from, to)]).unwrap_err());
    assert!(msg.starts_with(&format!("{key}: ")), "{msg:?} names {key}");
    assert!(!msg.contains("s3cr3t"), "{msg:?} echoes no value");
}

/// A self-signed CA certificate for tests (P-256, valid until 2126; its key was discarded):
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
/// -subj "/CN=jira-gitlab-sync test CA"`.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnTCCAUOgAwIBAgIUCBPFkb5z/rNrtFrH6Wdq0jXGSQAwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYamlyYS1naXRsYWItc3luYyB0ZXN0IENBMCAXDTI2MTIwMTEz
NTQyNFoYDzIxMjYxMTA3MTM1NDI0WjAjMSEwHwYDVQQDDBhqaXJhLWdpdGxhYi1z
eW5jIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQfmHTyTZ6GGv9s
ddVey6dfmyZl5ufKWUHSCEvV80ebfL0eBrlmu0GF7Ej6Ycq4yYwjrSKJqzHenUbN
lD2KoZg5o1MwUTAdBgNVHQ4EFgQUnVizVK9bdhGB7nty1SMXXEPWkecwHwYDVR0j
BBgwFoAUnVizVK9bdhGB7nty1SMXXEPWkecwDwYDVR0TAQH/BAUwAwEB/zAKBggq
hkjOPQQDAgNIADBFAiEAgeEGxz/wLSlRiVDzbwKdtjq+0+y5uaofJEhq0SWvrmIC
IDIxQV/oIgS5zYwiS88BOGuOeIcxDHHnGWJERizaKtSe
-----END CERTIFICATE-----\n";

/// The config with `[jira] ca_file` and `[gitlab] ca_file` set to files holding `jira` and
/// `gitlab` (`None`: a file that does not exist).
fn load_with_ca_files(
    jira: Option<&str>,
    gitlab: Option<&str>,
) -> (Result<Config, ConfigError>, [String; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let paths = ["jira-ca.pem", "gitlab-ca.pem"].map(|f| dir.path().join(f).display().to_string());
    for (content, path) in [(jira, &paths[0]), (gitlab, &paths[1])] {
        if let Some(c) = content {
            std::fs::write(path, c).unwrap();
        }
    }
    let text = config_text(dir.path(), RULE)
        .replacen(
            JIRA_URL,
            &format!("{JIRA_URL}\nca_file = \"{}\"", paths[0]),
            1,
        )
        .replacen(
            GITLAB_URL,
            &format!("{GITLAB_URL}\nca_file = \"{}\"", paths[1]),
            1,
        );
    (Config::from_toml(&text, Path::new("config.toml")), paths)
}

/// A PEM bundle of one or more certificates is accepted as a section's `ca_file`.
#[test]
fn ca_file_takes_a_pem_bundle() {
    let two = format!("# the company CA\n{TEST_CA}{TEST_CA}");
    let (cfg, _) = load_with_ca_files(Some(TEST_CA), Some(&two));
    let cfg = cfg.unwrap_or_else(|e| panic!("a valid ca_file is accepted: {}", chain(&e)));
    assert_eq!(cfg.jira.extra_roots.len(), 1);
    assert_eq!(
        cfg.gitlab.extra_roots.len(),
        2,
        "every certificate of the bundle"
    );
}

/// An unreadable or invalid `ca_file` is a config error naming the key and the path.
#[rstest::rstest]
#[case::missing(Some(TEST_CA), None, "gitlab.ca_file", 1)]
#[case::no_certificate(Some("just text\n"), Some(TEST_CA), "jira.ca_file", 0)]
#[case::key_only(
    Some(TEST_CA),
    Some("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"),
    "gitlab.ca_file",
    1
)]
#[case::bad_base64(
    Some("-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"),
    Some(TEST_CA),
    "jira.ca_file",
    0
)]
#[case::not_a_certificate(
    Some(TEST_CA),
    Some("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
    "gitlab.ca_file",
    1
)]
fn bad_ca_file_names_key_and_path(
    #[case] jira: Option<&str>,
    #[case] gitlab: Option<&str>,
    #[case] key: &str,
    #[case] which: usize,
) {
    let (cfg, paths) = load_with_ca_files(jira, gitlab);
    let msg = chain(&cfg.expect_err("an invalid ca_file is refused"));
    assert!(msg.starts_with(&format!("{key}: ")), "{msg:?} names {key}");
    assert!(msg.contains(&paths[which]), "{msg:?} names the file");
}

/// `[store] keep_runs_days` defaults to 30 and takes 1 to 36500; anything else is refused with
/// its key and the range named.
#[test]
fn keep_runs_days_is_a_range_of_days() {
    assert_eq!(load(RULE).unwrap().store_keep_runs_days, 30);
    let cfg = load(&format!("[store]\nkeep_runs_days = 7\n{RULE}")).unwrap();
    assert_eq!(cfg.store_keep_runs_days, 7);
    for bad in ["0", "-1", "36501"] {
        let err = load(&format!("[store]\nkeep_runs_days = {bad}\n{RULE}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.keep_runs_days") && err.contains("from 1 to 36500"),
            "{bad}: {err}"
        );
    }
}

/// The history keys parse into their typed values; by default a rule reads no changelog.
#[test]
fn history_keys_parse() {
    use crate::config::{ClosedFrom, CreatedFrom};
    let cfg = load(RULE).unwrap();
    assert!(cfg.rules[0].history.is_default());
    assert!(!cfg.rules[0].history.needs_transitions());
    let cfg = load(&format!(
        "{RULE}created_from = \"field:customfield_10042\"\nclosed_from = \"status:Mitigated\"\n\
         [rule.stage_labels]\n\"In Progress\" = \"workflow::in progress\"\n"
    ))
    .unwrap();
    let h = &cfg.rules[0].history;
    assert_eq!(
        h.created_from,
        CreatedFrom::Field("customfield_10042".into())
    );
    assert_eq!(h.closed_from, ClosedFrom::Status("Mitigated".into()));
    assert_eq!(h.stage_label("In Progress"), Some("workflow::in progress"));
    assert!(h.needs_transitions());
    assert_eq!(h.field_ids(), vec!["customfield_10042".to_owned()]);
}

/// `timeline_events` defaults to on for incident rules, can be turned off, and is off for other
/// targets (where `false` is accepted and `true` refused, naming the key).
#[test]
fn timeline_events_default_to_incident_rules() {
    let incident = load(RULE).unwrap();
    assert!(incident.rules[0].timeline_events);
    let off = load(&RULE.replace(
        "target = \"incident\"",
        "target = \"incident\"\ntimeline_events = false",
    ))
    .unwrap();
    assert!(!off.rules[0].timeline_events);
    let issue = load(&RULE.replace(
        "target = \"incident\"",
        "target = \"issue\"\ntimeline_events = false",
    ))
    .unwrap();
    assert!(!issue.rules[0].timeline_events);
}
