//! The docs show what the product does: every fenced code block of the READMEs is checked.
//!
//! - A ```` ```gwp ```` block is a complete policy: it compiles without errors (warnings are
//!   fine: key files it names need not exist, `env(...)` is unset) and is formatted as
//!   `gw-check fmt` formats it. A block that is only part of a policy (a statement, a few
//!   lines of a block) says so in its info string: ```` ```gwp fragment ````; it is not checked.
//! - A shell block (`sh`, `bash`, `shell`, `console`): every word of a command that is a path
//!   into the repository (has a `/`, is not absolute, not a URL, not quoted, not `$VAR/...`)
//!   names a file or folder that exists, from the repository root or from the README's own
//!   folder. A bare file name (`policy.gwp`) stands for the reader's own file and is not checked.
//! - `gw-check policies examples` and `gw-check fmt --check policies examples` pass as shipped,
//!   with no environment prepared.

use std::fs;
use std::path::{Path, PathBuf};

use gw_compiler::diagnostics::{render, Style};
use gw_compiler::fmt::format_source;
use gw_compiler::load::Loader;
use gw_compiler::{compile, Mode, Options};

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("compiler/ has a parent").to_path_buf()
}

/// The READMEs a reader meets: the project's, the language reference, policies/ and examples/.
fn readmes() -> Vec<PathBuf> {
    let root = workspace_dir();
    let mut v = vec![root.join("README.md"), root.join("grammar/README.md"), root.join("policies/README.md")];
    v.push(root.join("examples/README.md"));
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("examples"))
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("README.md").exists())
        .collect();
    dirs.sort();
    v.extend(dirs.into_iter().map(|d| d.join("README.md")));
    v
}

struct Block {
    /// The info string after the fence, e.g. `gwp fragment`.
    info: String,
    text: String,
    /// 1-based line of the opening fence.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = vec![];
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block { info: info.trim().to_string(), text: String::new(), line: i + 1 })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

/// The README's folder on disk, the block as `doc.gwp` in it, and an empty file for any key
/// file the block names that is not there.
struct DocLoader {
    root: PathBuf,
    block: String,
}

impl Loader for DocLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        if path == self.root {
            return Ok(self.block.clone().into_bytes());
        }
        match fs::read(path) {
            Err(e) if path.extension().is_some_and(|x| x == "keys") && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(vec![])
            }
            other => other,
        }
    }
}

fn unset(_: &str) -> Option<String> {
    None
}

#[test]
fn every_gwp_block_compiles_and_is_formatted() {
    let mut failures = vec![];
    let mut checked = 0;
    for readme in readmes() {
        let text = fs::read_to_string(&readme).expect("readable README");
        let dir = readme.parent().expect("a folder").to_path_buf();
        for b in blocks(&text) {
            let mut words = b.info.split_whitespace();
            if words.next() != Some("gwp") || words.any(|w| w == "fragment") {
                continue;
            }
            checked += 1;
            let at = format!("{}:{}", readme.display(), b.line);
            let root = dir.join("doc.gwp");
            let loader = DocLoader { root: root.clone(), block: b.text.clone() };
            let out = compile(&loader, &root, &Options { mode: Mode::Check, env: &unset });
            for d in out.diagnostics.iter().filter(|d| d.is_error()) {
                failures.push(format!("{at}: does not compile:\n{}", render(d, &out.sources, Style::Plain)));
            }
            match format_source(&b.text) {
                Ok(formatted) if formatted != b.text => {
                    failures.push(format!("{at}: not formatted as gw-check fmt formats it:\n{formatted}"))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{at}: {e}")),
            }
        }
    }
    assert!(checked >= 5, "only {checked} complete gwp blocks found");
    assert!(failures.is_empty(), "{} problem(s):\n\n{}", failures.len(), failures.join("\n\n"));
}

/// The words of a shell line, without quoted words, without the target of a redirection (a
/// file the command writes) and without its comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = vec![];
    let mut word = String::new();
    let mut quoted = false;
    let mut redirected = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => {
                quote = Some(c);
                quoted = true;
            }
            (None, '#') if word.is_empty() => break,
            (None, c) if c.is_whitespace() || matches!(c, '|' | ';' | '&' | '(' | ')' | '<' | '>') => {
                if !word.is_empty() || quoted {
                    if !quoted && !redirected {
                        words.push(word.clone());
                    }
                    redirected = false;
                }
                word.clear();
                quoted = false;
                if c == '>' {
                    redirected = true;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() && !quoted && !redirected {
        words.push(word);
    }
    words
}

/// Is this word a path into the repository (see the module comment)?
fn repo_path(word: &str) -> bool {
    let relative = !word.starts_with(['/', '-', '~']) && !word.starts_with("../");
    relative && word.contains('/') && !word.contains([':', '$', '=', '*', '{', '?', '@', '\\'])
}

#[test]
fn every_file_a_shell_command_names_exists() {
    let root = workspace_dir();
    let mut failures = vec![];
    let mut checked = 0;
    for readme in readmes() {
        let text = fs::read_to_string(&readme).expect("readable README");
        let dir = readme.parent().expect("a folder").to_path_buf();
        for b in blocks(&text) {
            if !matches!(b.info.split_whitespace().next(), Some("sh" | "bash" | "shell" | "console")) {
                continue;
            }
            for (i, line) in b.text.lines().enumerate() {
                for w in shell_words(line.trim_start_matches("$ ")) {
                    if !repo_path(&w) {
                        continue;
                    }
                    checked += 1;
                    let path = w.trim_end_matches('/');
                    if !root.join(path).exists() && !dir.join(path).exists() {
                        failures.push(format!("{}:{}: `{w}` does not exist", readme.display(), b.line + 1 + i));
                    }
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} paths found in shell blocks");
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn shell_words_skip_quotes_comments_and_urls() {
    assert_eq!(
        shell_words("gw serve examples/a.gwp --listen 0.0.0.0:80 -H 'x: a/b' # see docs/x"),
        ["gw", "serve", "examples/a.gwp", "--listen", "0.0.0.0:80", "-H"]
    );
    assert_eq!(shell_words("echo \"$(x)\" >> keys/new.keys; cat a/b"), ["echo", "cat", "a/b"]);
    assert!(repo_path("examples/a.gwp"));
    assert!(repo_path(".ci/test"));
    assert!(!repo_path("http://127.0.0.1:9100/v1"));
    assert!(!repo_path("localhost:8080/v1/models"));
    assert!(!repo_path("/etc/hosts"));
    assert!(!repo_path("$HOME/x"));
    assert!(!repo_path("policy.gwp"));
}

/// A newcomer's first run, as the READMEs show it: `gw-check policies examples` passes as
/// shipped, with no environment prepared (no salt, no tokens), and so does `fmt --check`.
#[test]
fn the_shipped_policies_pass_gw_check_as_shipped() {
    for args in [&["policies", "examples"][..], &["fmt", "--check", "policies", "examples"][..]] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gw-check"));
        cmd.args(args).current_dir(workspace_dir());
        for (k, _) in std::env::vars() {
            if k.starts_with("AUTH_") || k.starts_with("GW_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("gw-check runs");
        assert!(
            out.status.success(),
            "gw-check {args:?} exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
