use std::path::Path;
use std::process::{Command, Output};

use crate::support::output_text;

/// Every command, as `--help` lists it.
const COMMANDS: [&str; 11] = [
    "run",
    "check",
    "status",
    "retry",
    "forget",
    "demo",
    "sandbox",
    "backfill",
    "repair",
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

/// A unit file's settings, in order: (section, key, value), comments and blank lines left out.
fn unit_settings(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("a unit line is key=value: {line:?}"));
        settings.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    settings
}

/// The one value of `key` among `settings`.
fn setting<'a>(settings: &'a [(String, String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "one {key}= in the unit: {values:?}");
    values[0]
}

/// The Debian package's unit is the source install's unit with exactly two changes: the binary
/// where the package puts it, and the package's system user instead of a dynamic one. Every
/// other setting (hardening, credentials, stop timeout, paths) is the same, so a fix to one
/// unit that misses the other fails here.
#[test]
fn the_packaged_unit_is_the_source_unit_with_the_packages_paths_and_user() {
    let source = unit_settings(include_str!("../deploy/jira-gitlab-sync.service"));
    let packaged = unit_settings(include_str!("../deploy/debian/jira-gitlab-sync.service"));
    let mut expected = Vec::new();
    for (section, key, value) in source {
        match key.as_str() {
            "ExecStart" => {
                let rest = value
                    .strip_prefix("/usr/local/bin/jira-gitlab-sync ")
                    .expect("a source install runs /usr/local/bin/jira-gitlab-sync");
                expected.push((section, key, format!("/usr/bin/jira-gitlab-sync {rest}")));
            }
            "DynamicUser" => {
                assert_eq!(value, "yes");
                for (key, value) in [
                    ("User", "jira-gitlab-sync"),
                    ("Group", "jira-gitlab-sync"),
                    // DynamicUser= implies it; a static user must ask.
                    ("RemoveIPC", "yes"),
                ] {
                    expected.push((section.clone(), key.to_owned(), value.to_owned()));
                }
            }
            _ => expected.push((section, key, value)),
        }
    }
    assert_eq!(
        packaged, expected,
        "deploy/debian/jira-gitlab-sync.service differs from deploy/jira-gitlab-sync.service in \
         more than the binary's path and the user"
    );
}

/// Cargo.toml's `[package.metadata.deb]` puts the binary and the config where the packaged unit
/// looks for them, with modes the service's user can use, marks the config a conffile (it is
/// under /etc), and its postinst creates the user the unit runs as and the state directory,
/// 0700, that the config's store lives in.
#[test]
fn the_package_installs_what_its_unit_names() {
    let manifest: toml::Value =
        toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml is TOML");
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(&str, &str, &str)> = deb["assets"]
        .as_array()
        .expect("explicit assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("[source, dest, mode]");
            let s = |i: usize| a[i].as_str().expect("strings");
            (s(0), s(1), s(2))
        })
        .collect();
    let installed = |source: &str| -> (String, &str) {
        let (_, dest, mode) = assets
            .iter()
            .find(|(s, _, _)| *s == source)
            .unwrap_or_else(|| panic!("the package ships {source}: {assets:?}"));
        let name = source.rsplit('/').next().expect("a file name");
        let path = match dest.strip_suffix('/') {
            Some(dir) => format!("/{dir}/{name}"),
            None => format!("/{dest}"),
        };
        (path, mode)
    };

    let unit = unit_settings(include_str!("../deploy/debian/jira-gitlab-sync.service"));
    let exec: Vec<&str> = setting(&unit, "ExecStart").split_whitespace().collect();
    let (binary, mode) = installed("target/release/jira-gitlab-sync");
    assert_eq!(
        exec[0], binary,
        "ExecStart runs the binary the package installs"
    );
    assert_eq!(mode, "755");
    let config = exec
        .iter()
        .position(|w| *w == "--config")
        .map(|i| exec[i + 1])
        .expect("ExecStart names the config");
    let (path, mode) = installed("deploy/config.toml");
    assert_eq!(
        config, path,
        "the unit reads the config the package installs"
    );
    assert!(
        path.starts_with("/etc/"),
        "cargo-deb makes files under /etc conffiles, kept across upgrades: {path}"
    );
    assert_eq!(
        mode, "644",
        "the service's user, neither root nor in root's group, reads the config"
    );

    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer scripts");
    assert_eq!(
        scripts, "deploy/debian/",
        "where the unit and the scripts are"
    );
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-name"].as_str(), Some("jira-gitlab-sync"));
    assert_eq!(
        units["enable"].as_bool(),
        Some(false),
        "a fresh install has no tokens: the service is enabled by the operator"
    );
    let postinst = include_str!("../deploy/debian/postinst");
    let postrm = include_str!("../deploy/debian/postrm");
    for script in [postinst, postrm] {
        assert!(
            script.lines().any(|l| l == "#DEBHELPER#"),
            "cargo-deb inserts its systemd fragments at #DEBHELPER#"
        );
    }
    // The script's commands, each on one line with single spaces.
    let commands: Vec<String> = postinst
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let user = setting(&unit, "User");
    assert_eq!(setting(&unit, "Group"), user);
    let state = format!("/var/lib/{}", setting(&unit, "StateDirectory"));
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("adduser --system --group ")
                && c.contains(&format!(" --home {state} "))
                && c.ends_with(&format!(" {user}"))),
        "postinst creates the system user {user} the unit runs as: {commands:#?}"
    );
    assert!(
        commands.contains(&format!("install -d -o {user} -g {user} -m 0700 {state}")),
        "postinst creates the state directory {state}, the user's alone: {commands:#?}"
    );
    let store: toml::Value =
        toml::from_str(include_str!("../deploy/config.toml")).expect("the config is TOML");
    let store = store["store"]["path"].as_str().expect("a store path");
    assert!(
        store.starts_with(&format!("{state}/")),
        "the config's store {store} is in the state directory {state}"
    );
}

/// The Containerfile (which no test can build: there is no container engine here) copies every
/// path the build reads, none of which its ignore file drops, builds with the Rust release
/// Cargo.toml names, runs on distroless as nonroot, and gives the shipped deploy/config.toml
/// what it expects: the config where the image says, the store in the volume, the tokens'
/// relative names in $CREDENTIALS_DIRECTORY.
#[test]
fn the_containerfile_builds_from_what_it_copies_and_runs_the_shipped_config() {
    let containerfile = include_str!("../deploy/Containerfile");
    let ignored: Vec<&str> = include_str!("../deploy/Containerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let instructions: Vec<&str> = containerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let from: Vec<&str> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a run stage: {from:?}");
    let manifest: toml::Value =
        toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml is TOML");
    let rust = manifest["package"]["rust-version"]
        .as_str()
        .expect("a rust-version");
    assert_eq!(
        from[0],
        format!("docker.io/library/rust:{rust}-bookworm AS build"),
        "the official Rust image, at the release Cargo.toml names, on Debian 12"
    );
    assert_eq!(from[1], "gcr.io/distroless/cc-debian12:nonroot");
    assert!(instructions.contains(&"USER nonroot:nonroot"));

    // Every source the build stage copies from the context exists and is not ignored.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut copied = Vec::new();
    for line in &instructions {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(root.join(source).exists(), "COPY {source}: no such path");
            assert!(
                !ignored.contains(source),
                "COPY {source}, yet it is ignored"
            );
            copied.push(*source);
        }
    }
    // Every file Cargo.toml declares a target at, and the migrations, are among them.
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    needed.push(
        manifest["lib"]["path"]
            .as_str()
            .expect("lib path")
            .to_owned(),
    );
    for (table, default_dir) in [("bin", "src/bin"), ("test", "tests"), ("bench", "benches")] {
        for target in manifest[table].as_array().expect("targets") {
            let path = match target.get("path") {
                Some(path) => path.as_str().expect("a path").to_owned(),
                None => format!(
                    "{default_dir}/{}.rs",
                    target["name"].as_str().expect("a name")
                ),
            };
            needed.push(path);
        }
    }
    needed.push("schema/0001_init.sql".into());
    for path in needed {
        assert!(
            copied
                .iter()
                .any(|c| path == *c || path.starts_with(&format!("{c}/"))),
            "the build reads {path}, which the Containerfile does not copy: {copied:?}"
        );
    }
    assert!(
        ignored.contains(&"target"),
        "the context leaves out target/"
    );

    // The run stage and the shipped config agree.
    let env = |name: &str| -> String {
        let at = containerfile
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("the image sets {name}"));
        containerfile[at + name.len() + 1..]
            .split_whitespace()
            .next()
            .expect("a value")
            .to_owned()
    };
    assert_eq!(
        env("JIRA_GITLAB_SYNC_CONFIG"),
        "/etc/jira-gitlab-sync/config.toml"
    );
    let config: toml::Value =
        toml::from_str(include_str!("../deploy/config.toml")).expect("the config is TOML");
    let store = config["store"]["path"].as_str().expect("a store path");
    assert!(
        containerfile.contains("VOLUME [\"/var/lib/jira-gitlab-sync\"]")
            && store.starts_with("/var/lib/jira-gitlab-sync/"),
        "the store {store} is in the image's volume"
    );
    assert_eq!(env("CREDENTIALS_DIRECTORY"), "/run/secrets");
    for service in ["jira", "gitlab"] {
        let file = config[service]["token_file"].as_str().expect("token_file");
        assert!(
            !file.contains('/'),
            "{service}'s token file is a name looked up in $CREDENTIALS_DIRECTORY: {file}"
        );
    }
    assert!(
        instructions.contains(&"ENTRYPOINT [\"/usr/local/bin/jira-gitlab-sync\"]")
            && instructions.contains(&"CMD [\"--log-format\", \"json\", \"run\"]"),
        "the image runs the service, and any other command in its place"
    );
}

/// The README's steps after installing the package, replayed on a model of the file system the
/// package leaves (Cargo.toml's assets with their modes, directories 0755 as dpkg makes them,
/// the state directory postinst makes), give the service what it needs: its binary and config
/// usable by its user (not root, not in root's group), its tokens root's alone. A step this
/// model does not know fails the test, so the README cannot drift from what is checked.
#[test]
fn readme_package_steps_let_the_service_user_read_what_it_needs() {
    use std::collections::BTreeMap;
    let readme = include_str!("../README.md");
    let section = readme
        .split("### Debian package")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("the README has the Debian package section");
    // The second sh block: what to do once the package is installed.
    let steps = section
        .split("```sh\n")
        .nth(2)
        .and_then(|b| b.split("```").next())
        .expect("the section has the steps after installing");

    // path -> (mode, is a directory)
    let mut fs: BTreeMap<String, (u32, bool)> = BTreeMap::new();
    let manifest: toml::Value =
        toml::from_str(include_str!("../Cargo.toml")).expect("Cargo.toml is TOML");
    for asset in manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("assets")
    {
        let asset = asset.as_array().expect("[source, dest, mode]");
        let source = asset[0].as_str().expect("a source");
        let dest = asset[1].as_str().expect("a destination");
        let mode = u32::from_str_radix(asset[2].as_str().expect("a mode"), 8).expect("octal");
        let path = match dest.strip_suffix('/') {
            Some(dir) => format!("/{dir}/{}", source.rsplit('/').next().expect("a name")),
            None => format!("/{dest}"),
        };
        let mut dir = Path::new(&path).parent();
        while let Some(d) = dir {
            fs.entry(d.to_str().expect("UTF-8").to_owned())
                .or_insert((0o755, true));
            dir = d.parent();
        }
        fs.insert(path, (mode, false));
    }
    fs.insert("/var/lib/jira-gitlab-sync".to_owned(), (0o700, true));

    let umask = 0o022;
    let mode = |m: &str| u32::from_str_radix(m, 8).expect("an octal mode");
    for line in steps.lines() {
        let cmd = line.split(" #").next().unwrap_or("").trim();
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["sudoedit", path] => assert!(fs.contains_key(*path), "{path} is installed"),
            ["sudo", "install", "-m", m, "/dev/null", dst] => {
                fs.insert((*dst).to_owned(), (mode(m), false));
            }
            ["printf", .., "|", "sudo", "tee", path, ">/dev/null"] => {
                fs.entry((*path).to_owned())
                    .or_insert((0o666 & !umask, false));
            }
            ["sudo", w, ..] if w.starts_with("CREDENTIALS_DIRECTORY=") => {}
            ["sudo", "systemctl", ..] | ["sudo", "-u", "jira-gitlab-sync", ..] => {}
            other => panic!("a README step this test does not model: {other:?}"),
        }
    }

    let unit = unit_settings(include_str!("../deploy/debian/jira-gitlab-sync.service"));
    assert_ne!(setting(&unit, "User"), "root");
    let usable_by_others = |path: &str, bit: u32| -> Result<(), String> {
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir {
            let d = d.to_str().expect("UTF-8");
            match fs.get(d) {
                Some((m, true)) if m & 0o001 != 0 => {}
                Some((m, _)) => return Err(format!("{d} is {m:04o}: others cannot enter it")),
                None => {}
            }
            dir = Path::new(d).parent();
        }
        match fs.get(path) {
            Some((m, false)) if m & bit != 0 => Ok(()),
            Some((m, _)) => Err(format!("{path} is {m:04o}")),
            None => Err(format!("{path} is never installed")),
        }
    };
    let exec: Vec<&str> = setting(&unit, "ExecStart").split_whitespace().collect();
    usable_by_others(exec[0], 0o001)
        .unwrap_or_else(|e| panic!("the service's user cannot run the binary: {e}"));
    let config = exec
        .iter()
        .position(|w| *w == "--config")
        .map(|i| exec[i + 1])
        .expect("ExecStart names the config");
    usable_by_others(config, 0o004)
        .unwrap_or_else(|e| panic!("the service's user cannot read its config: {e}"));
    let credentials: Vec<&str> = unit
        .iter()
        .filter(|(_, k, _)| k == "LoadCredential")
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(credentials.len(), 2, "{credentials:?}");
    for credential in credentials {
        let (_, source) = credential.split_once(':').expect("name:path");
        let (m, dir) = fs
            .get(source)
            .unwrap_or_else(|| panic!("the README never writes {source}"));
        assert!(!dir, "{source} is a file");
        assert_eq!(m & 0o077, 0, "{source} is root's alone: {m:04o}");
    }
}
