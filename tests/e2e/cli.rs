//! What installs with the binary: shell completions and the manual page, generated from the
//! command-line definition.

use crate::common::*;

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let o = dockwatch().args(["completions", shell]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for sub in ["tail", "download", "on-upload", "resume"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
        assert!(script.contains("--aws-cloudwatch-group"), "{shell}");
    }
    // The bash script is valid bash.
    let o = dockwatch().args(["completions", "bash"]).output().unwrap();
    let file = std::env::temp_dir().join(unique("dw-completion.bash"));
    std::fs::write(&file, &o.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let _ = std::fs::remove_file(&file);

    let o = dockwatch().arg("man").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(
        page.contains(".TH dockwatch 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    for section in [
        "DOCKWATCH TAIL",
        "DOCKWATCH DOWNLOAD",
        "DOCKWATCH ON-UPLOAD",
        "DOCKWATCH REMOTE LAUNCH",
        "DOCKWATCH REMOTE EXEC",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(
        page.contains("late\\-window"),
        "the options of each command"
    );
    // Nested commands' options (remote launch), and no pages that are not installed.
    let launch = &page[page.find("DOCKWATCH REMOTE LAUNCH").unwrap()..];
    let launch = &launch[..launch[1..].find("\n.S").map_or(launch.len(), |i| i + 1)];
    assert!(launch.contains("\\-\\-image"), "{launch}");
    assert!(
        !page.contains("dockwatch\\-tail(1)") && !page.contains("(1)\n"),
        "{page}"
    );
}

/// The help's examples survive an 80-column terminal: every command's text after
/// "Examples:" reads the same at 80 columns as at 200 (nothing was wrapped into a broken
/// command line), and no line of it is longer than 80.
#[test]
fn help_examples_fit_an_80_column_terminal() {
    let after = |cols: &str, cmd: &[&str]| {
        let o = dockwatch()
            .args(cmd)
            .arg("--help")
            .env("COLUMNS", cols)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{cmd:?}: {}", stderr(&o));
        let text = stdout(&o);
        let at = text
            .find("Examples:")
            .unwrap_or_else(|| panic!("{cmd:?}: no examples"));
        text[at..].to_string()
    };
    for cmd in [
        &[][..],
        &["run"],
        &["resume"],
        &["tail"],
        &["download"],
        &["agent"],
        &["remote"],
        &["on-upload"],
    ] {
        let narrow = after("80", cmd);
        assert_eq!(narrow, after("200", cmd), "{cmd:?}: wrapped at 80 columns");
        for line in narrow.lines() {
            assert!(line.chars().count() <= 80, "{cmd:?}: {line:?}");
        }
    }
}
