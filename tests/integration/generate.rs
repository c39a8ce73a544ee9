//! `splitdns generate`: the man page renders cleanly with groff and names every subcommand;
//! the bash completion script parses and really completes subcommands and flags.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::process;

fn generated(what: &str) -> String {
    let out = process::run(&["generate", what]);
    assert!(out.status.success(), "generate {what}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn man_page_renders_without_warnings_and_covers_every_command() {
    let page = generated("man");
    assert!(page.contains("\n.TH splitdns 1 "), "no title line");
    for needle in [
        "splitdns serve",
        "splitdns check",
        "splitdns route",
        "splitdns dhcp\\-hook",
        "\\-\\-listen",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH EXIT STATUS",
    ] {
        assert!(page.contains(needle), "man page lacks {needle:?}");
    }
    if !have("groff") {
        // .ci/run installs groff-base, so CI always runs the check below.
        eprintln!("groff not installed (apt-get install groff-base): rendering not checked");
        return;
    }
    // -ww: all warnings; -z: no output. A malformed request or escape is reported on stderr.
    let out = run_with_stdin(Command::new("groff").args(["-man", "-ww", "-z"]), &page);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "groff warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = run_with_stdin(
        Command::new("groff").args(["-man", "-Tutf8", "-P-cbou"]),
        &page,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("dhcp-hook --output"), "{text}");
}

/// Sources the completion script in a real bash and asks it to complete `words`.
fn bash_complete(script: &str, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n_splitdns splitdns '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = words_q.join(" "),
        cword = words.len() - 1,
        line = words.join(" "),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = run_with_stdin(Command::new("bash").arg("--norc").arg("-s"), &program);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let script = generated("complete-bash");
    let out = run_with_stdin(Command::new("bash").arg("-n"), &script);
    assert!(out.status.success(), "bash -n: {out:?}");
    let got = bash_complete(&script, &["splitdns", "ch"]);
    assert_eq!(got, vec!["check"], "completing `splitdns ch`");
    let got = bash_complete(&script, &["splitdns", "serve", "--li"]);
    assert_eq!(got, vec!["--listen"], "completing `splitdns serve --li`");
    let got = bash_complete(&script, &["splitdns", "generate", "complete-"]);
    assert!(got.contains(&"complete-zsh".to_string()), "{got:?}");
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    for what in ["complete-zsh", "complete-fish"] {
        let s = generated(what);
        for cmd in ["serve", "check", "route", "dhcp-hook"] {
            assert!(s.contains(cmd), "{what} lacks {cmd}");
        }
    }
    assert!(generated("complete-zsh").starts_with("#compdef splitdns"));
}
