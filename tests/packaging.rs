use std::path::Path;
use std::process::{Command, Output};

use crate::support::output_text;

/// Every command, as `--help` lists it.
const COMMANDS: [&str; 10] = [
    "run",
    "check",
    "status",
    "retry",
    "forget",
    "demo",
    "sandbox",
    "backfill",
    "completions",
    "man",
];

/// The binary with `args`, no config anywhere, run to completion.
fn binary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jira-gitlab-sync"))
        .args(args)
        .env_remove("JIRA_GITLAB_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

/// Stdout of a run that must succeed.
fn stdout_of(args: &[&str]) -> String {
    let out = binary(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        output_text(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Whether `program` can be run here.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What bash completes for the words typed so far (the last one being completed), using the
/// script `completions bash` prints, loaded the way bash-completion loads it.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{script}'\n\
         fn=$(complete -p jira-gitlab-sync | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n\
         [ -n \"$fn\" ] || {{ echo 'no completion function registered' >&2; exit 3; }}\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         \"$fn\" jira-gitlab-sync \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "bash: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `completions bash` is a script bash loads, which completes every command, a command's own
/// options and the values of an enumerated argument.
#[test]
fn bash_completion_completes_commands_and_options() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = dir.path().join("jira-gitlab-sync.bash");
    std::fs::write(&script, stdout_of(&["completions", "bash"])).expect("script written");

    let commands = bash_completes(&script, &["jira-gitlab-sync", ""]);
    for command in COMMANDS {
        assert!(
            commands.iter().any(|c| c == command),
            "the commands offered include {command}: {commands:?}"
        );
    }
    assert!(commands.iter().any(|c| c == "--config"), "{commands:?}");
    assert_eq!(
        bash_completes(&script, &["jira-gitlab-sync", "ba"]),
        ["backfill"],
        "a prefix completes to the one command it starts"
    );
    let backfill = bash_completes(&script, &["jira-gitlab-sync", "backfill", "--"]);
    for option in ["--since", "--until", "--rule", "--dry-run", "--config"] {
        assert!(
            backfill.iter().any(|o| o == option),
            "backfill's options include {option}: {backfill:?}"
        );
    }
    assert!(
        !backfill.iter().any(|o| o == "--once"),
        "an option of another command is not offered: {backfill:?}"
    );
    let mut shells = bash_completes(&script, &["jira-gitlab-sync", "completions", ""]);
    shells.retain(|w| !w.starts_with('-'));
    assert_eq!(
        shells,
        ["bash", "elvish", "fish", "powershell", "zsh"],
        "completions offers the shells it can write for"
    );
}

/// Each shell gets its own completion script naming the binary, its commands and options.
#[test]
fn every_shell_gets_a_completion_script() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef jira-gitlab-sync"),
        ("fish", "complete -c jira-gitlab-sync"),
        (
            "elvish",
            "set edit:completion:arg-completer[jira-gitlab-sync]",
        ),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script}");
        // fish names options without their dashes (`-l since`).
        for word in ["backfill", "since", "config", "completions", "man"] {
            assert!(script.contains(word), "{shell} completes {word}: {script}");
        }
    }
    let out = binary(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{}",
        output_text(&out)
    );
}

/// The roff macros our pages may use (man(7)); anything else is a mistake.
const MAN_MACROS: [&str; 9] = ["TH", "SH", "SS", "TP", "PP", "IP", "RS", "RE", "br"];

/// Checks that `page` is a well-formed man(7) page titled `title`: ASCII, the roff apostrophe
/// preamble once at the top, a title line, only known macros, text lines that roff cannot take
/// for control lines, and the sections every page has. Returns the page's section names.
fn check_structure(title: &str, page: &str) -> Vec<String> {
    assert!(
        page.is_ascii(),
        "{title}: the page is ASCII, so any roff reads it"
    );
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let body = page
        .strip_prefix(preamble)
        .unwrap_or_else(|| panic!("{title}: starts with roff's apostrophe preamble: {page}"));
    assert!(
        !body.contains(".ds Aq"),
        "{title}: the preamble appears once: {page}"
    );
    let mut lines = body.lines();
    let th = lines.next().expect("a title line");
    assert!(
        th.starts_with(&format!(".TH {title} 1 ")),
        "{title}: the title line names the page and section 1: {th}"
    );
    let mut sections = Vec::new();
    for line in lines {
        if let Some(control) = line.strip_prefix('.') {
            let name = control.split_whitespace().next().unwrap_or("");
            assert!(
                MAN_MACROS.contains(&name),
                "{title}: an unknown macro .{name} in {line:?}"
            );
            if name == "SH" {
                sections.push(control[2..].trim().trim_matches('"').to_owned());
            }
        } else {
            assert!(
                !line.starts_with('\''),
                "{title}: a text line roff would take for a control line: {line:?}"
            );
        }
    }
    for required in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
        assert!(
            sections.iter().any(|s| s == required),
            "{title}: has a {required} section: {sections:?}"
        );
    }
    sections
}

/// `page` typeset by groff as plain text, with groff's own warnings (all enabled) failing the
/// test; None where groff is not installed.
fn groff_text(title: &str, page: &str) -> Option<String> {
    if !have("groff") {
        eprintln!("groff is not installed: {title} checked for structure only");
        return None;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join(format!("{title}.1"));
    std::fs::write(&file, page).expect("page written");
    let out = Command::new("groff")
        .args(["-man", "-Tascii", "-ww", "-P-cbou"])
        .arg(&file)
        .output()
        .expect("groff runs");
    assert!(out.status.success(), "groff: {}", output_text(&out));
    assert!(
        out.stderr.is_empty(),
        "{title}: groff warns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `man` prints jira-gitlab-sync(1): valid roff (groff typesets it without a warning) naming
/// every command, the global options, the exit codes, the environment and the files.
#[test]
fn man_prints_a_valid_page_naming_commands_and_options() {
    let page = stdout_of(&["man"]);
    let sections = check_structure("jira-gitlab-sync", &page);
    for section in [
        "SUBCOMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            sections.iter().any(|s| s == section),
            "has {section}: {sections:?}"
        );
    }
    for command in COMMANDS {
        let reference = format!("jira\\-gitlab\\-sync\\-{command}");
        assert!(
            page.contains(&reference),
            "the page refers to {command}'s own page: {page}"
        );
    }
    for option in [
        "\\-\\-config",
        "\\-\\-once",
        "\\-\\-dry\\-run",
        "\\-\\-log\\-format",
    ] {
        assert!(page.contains(option), "the page documents {option}");
    }
    if let Some(text) = groff_text("jira-gitlab-sync", &page) {
        for words in [
            "jira-gitlab-sync-backfill(1)",
            "--config <FILE>",
            "JIRA_GITLAB_SYNC_CONFIG",
            "/etc/jira-gitlab-sync/config.toml",
            "EXIT STATUS",
        ] {
            assert!(
                text.contains(words),
                "the typeset page shows {words}: {text}"
            );
        }
    }
}

/// `man --dir` writes the main page and one page per command, each valid roff listing that
/// command's own options, and prints their paths.
#[test]
fn man_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let target = dir.path().join("man1");
    let printed = stdout_of(&["man", "--dir", target.to_str().expect("UTF-8 path")]);
    let mut expected: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("jira-gitlab-sync-{c}.1"))
        .collect();
    expected.push("jira-gitlab-sync.1".to_owned());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&target)
        .expect("the directory was created")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    written.sort();
    assert_eq!(written, expected, "one page per command, and the main page");
    for name in &written {
        assert!(
            printed.lines().any(|l| Path::new(l) == target.join(name)),
            "the path of {name} is printed: {printed}"
        );
        let page = std::fs::read_to_string(target.join(name)).expect("page readable");
        let title = name.trim_end_matches(".1");
        check_structure(title, &page);
        groff_text(title, &page);
    }
    let backfill =
        std::fs::read_to_string(target.join("jira-gitlab-sync-backfill.1")).expect("readable");
    for option in [
        "\\-\\-since",
        "\\-\\-until",
        "\\-\\-accept\\-inexact\\-times",
    ] {
        assert!(backfill.contains(option), "backfill's page has {option}");
    }
    assert!(
        backfill.contains(&format!(
            "\"jira-gitlab-sync {}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "a command's page is from the program, not from a program called backfill: {backfill}"
    );
}

/// `completions` and `man` need no config and refuse one, like `demo`; flags of other commands
/// are refused too.
#[test]
fn completions_and_man_refuse_flags_that_do_not_apply() {
    for (args, says) in [
        (
            &["--config", "c.toml", "completions", "bash"][..],
            "--config does not go with `completions`",
        ),
        (
            &["man", "--config", "c.toml"][..],
            "--config does not go with `man`",
        ),
        (&["--once", "man"][..], "--once does not go with `man`"),
        (
            &["--dry-run", "completions", "zsh"][..],
            "--dry-run does not go with `completions`",
        ),
        (&["completions"][..], "<SHELL>"),
    ] {
        let out = binary(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(out.stdout.is_empty(), "{args:?} printed nothing: {text}");
    }
}
