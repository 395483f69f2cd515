//! `completions` and `man`: shell completion scripts (clap_complete) and manual pages
//! (clap_mangen), generated from the same clap definition that parses the command line, so they
//! never drift from it. Packages run these to ship the files (deploy/package.sh).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::{Cli, Exit};

/// The binary's name, as completions and manual pages call it.
const BIN: &str = "jira-gitlab-sync";

/// The completion script for `shell`, on stdout.
pub fn completions(shell: Shell) -> anyhow::Result<Exit> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    if shell == Shell::Bash {
        script = fix_bash_states(&script);
    }
    to_stdout(&script)
}

/// Works around clap_complete's bash script for a binary whose name has a hyphen
/// (clap-rs/clap#6421): the loop that walks the words names the state of `backfill`
/// `jira__gitlab__sync__subcmd__backfill`, but the case arm that completes its options is
/// spelt `jira__subcmd__gitlab__subcmd__sync__subcmd__backfill`, so no command's options were
/// ever completed. Spelling the arms as the loop does fixes it; once clap_complete is fixed,
/// there is nothing left to replace.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let walked = format!("{}__subcmd__", BIN.replace('-', "__"));
    let armed = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    text.replace(&armed, &walked).into_bytes()
}

/// The manual page jira-gitlab-sync(1) on stdout, or, with `dir`, every page (that one and one
/// per command, `jira-gitlab-sync-backfill.1` and so on) written into `dir`, their paths on
/// stdout.
pub fn man(dir: Option<&Path>) -> anyhow::Result<Exit> {
    let Some(dir) = dir else {
        return to_stdout(&main_page()?);
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut written = String::new();
    for (name, page) in pages()? {
        let path = dir.join(name);
        std::fs::write(&path, page)
            .with_context(|| format!("cannot write the manual page {}", path.display()))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    to_stdout(written.as_bytes())
}

/// Every manual page, file name first: the main page, then one per command (as `git` and `cargo`
/// have), each listing that command's options.
fn pages() -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each command its display name (`jira-gitlab-sync-backfill`), which titles its page.
    cmd.build();
    let main = Man::new(cmd.clone());
    // A command's page is from the program, not from a program called `backfill`.
    let source = format!("{BIN} {}", env!("CARGO_PKG_VERSION"));
    let mut pages = vec![(PathBuf::from(main.get_filename()), main_page()?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone())
            .source(source.clone())
            .manual("jira-gitlab-sync manual");
        let mut page = Page::default();
        page.add(|w| man.render(w))?;
        let mut see_also = Roff::default();
        see_also.control("SH", ["SEE ALSO"]).text([
            bold(BIN),
            roman("(1): the exit codes, the environment and the files every command shares."),
        ]);
        page.add(|w| see_also.to_writer(w))?;
        pages.push((PathBuf::from(man.get_filename()), page.bytes));
    }
    Ok(pages)
}

/// jira-gitlab-sync(1): clap_mangen's sections (name, synopsis, description, options, commands,
/// version), with the after-help text in the description, then what a man page reader looks
/// for that clap does not hold: exit status, environment, files, see also.
fn main_page() -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let after_help = cmd.get_after_help().map(ToString::to_string);
    let man = Man::new(cmd).manual("jira-gitlab-sync manual");
    let mut page = Page::default();
    page.add(|w| man.render_title(w))?;
    page.add(|w| man.render_name_section(w))?;
    page.add(|w| man.render_synopsis_section(w))?;
    page.add(|w| man.render_description_section(w))?;

    let mut roff = Roff::default();
    if let Some(after_help) = after_help {
        roff.control("PP", []).text([roman(after_help)]);
    }
    roff.control("PP", []).text([
        roman("Each command has its own page, "),
        bold("jira-gitlab-sync-COMMAND"),
        roman("(1), and "),
        bold("jira-gitlab-sync COMMAND --help"),
        roman(" says the same. The README has the whole guide."),
    ]);
    page.add(|w| roff.to_writer(w))?;

    page.add(|w| man.render_options_section(w))?;
    page.add(|w| man.render_subcommands_section(w))?;

    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (
            "0",
            "All done; a service stopped by SIGTERM or SIGINT; check: ready.",
        ),
        (
            "1",
            "The cycle finished but some issues failed (named in the log, retried after a \
             backoff), Jira or GitLab was unreachable, or a signal stopped --once or backfill \
             before the end; check: it would run, but GitLab's numbers would be off.",
        ),
        (
            "2",
            "Fatal: a usage error, the config, credentials, permissions or the store; for retry \
             and forget, a key that is not failing; check: it would not work.",
        ),
        ("130", "A second signal: stopped at once."),
    ] {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        (
            "JIRA_GITLAB_SYNC_CONFIG",
            "The config file when --config is not given (else ./config.toml).",
        ),
        (
            "RUST_LOG",
            "Which log lines to print, e.g. debug or jira_gitlab_sync=debug,warn.",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Where a relative token_file is looked up; systemd's LoadCredential= sets it.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd when stderr goes to the journal: --log-format auto then logs JSON \
             lines.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd for Type=notify: the service reports READY=1, STOPPING=1 and \
             watchdog pings.",
        ),
        (
            "SSL_CERT_FILE, SSL_CERT_DIR",
            "Extra CA certificates to trust, besides the system's and the bundled roots.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
    roff.control("PP", []).text([
        roman("The tokens come from the variables the config names ("),
        italic("token_env"),
        roman(") or from files ("),
        italic("token_file"),
        roman("), never from the command line."),
    ]);

    roff.control("SH", ["FILES"]);
    for (name, meaning) in [
        (
            "/etc/jira-gitlab-sync/config.toml",
            "The config the systemd unit and the Debian package use; every key is documented \
             in the example config.toml.",
        ),
        (
            "/etc/jira-gitlab-sync/jira-token, /etc/jira-gitlab-sync/gitlab-token",
            "The tokens, mode 0600, owned by root; the unit hands them to the service with \
             LoadCredential=.",
        ),
        (
            "/var/lib/jira-gitlab-sync/sync.db",
            "The store (SQLite, with its -wal and -shm files and a .lock pid file), mode 0600.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }

    roff.control("SH", ["SEE ALSO"]).text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("systemd.exec"),
        roman("(5)"),
    ]);
    page.add(|w| roff.to_writer(w))?;
    page.add(|w| man.render_version_section(w))?;
    Ok(page.bytes)
}

/// A manual page assembled from pieces that each start with roff's apostrophe preamble (two
/// lines defining the string `Aq`): kept once, at the top.
#[derive(Default)]
struct Page {
    bytes: Vec<u8>,
}

impl Page {
    fn add(
        &mut self,
        render: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut piece = Vec::new();
        render(&mut piece).context("cannot render the manual page")?;
        let preamble = Roff::default().render();
        let piece = match piece.strip_prefix(preamble.as_bytes()) {
            Some(rest) if !self.bytes.is_empty() => rest,
            _ => &piece[..],
        };
        self.bytes.extend_from_slice(piece);
        Ok(())
    }
}

/// Writes `bytes` to stdout. A reader that went away (`| head`) is not an error.
fn to_stdout(bytes: &[u8]) -> anyhow::Result<Exit> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(Exit::Clean),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Clean),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}
