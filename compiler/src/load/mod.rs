//! Reading a policy: the root file, every file it imports (depth first, each once, cycles
//! refused), parsed with `syntax`. Files come through a `Loader` so that tests and fuzzers can
//! compile from memory with the same code path as `gw serve` and `gw-check`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ast::{File, Item};
use crate::diagnostics::{Code, Diag};
use crate::source::{FileId, Sources, Span};
use crate::syntax::{self, Comment};

mod credentials;
mod inputs;
pub use credentials::{credential_files, BasicSets, JwtSets};
pub use inputs::{env_vars, key_files};

/// Where policy and key files come from.
pub trait Loader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// A canonical form of the path, to detect the same file reached twice.
    fn canonical(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// Files on disk.
pub struct DiskLoader;

impl Loader for DiskLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Files in memory, by path: for tests and fuzzing.
#[derive(Debug, Clone, Default)]
pub struct MemLoader {
    pub files: HashMap<PathBuf, Vec<u8>>,
}

impl MemLoader {
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<Vec<u8>>) -> MemLoader {
        self.files.insert(path.into(), text.into());
        self
    }
}

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        normalize(path)
    }
}

/// Lexically resolve `.` and `..` (for in-memory paths, and paths in messages).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every parsed file, with the items of all files in import order.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: Sources,
    pub items: Vec<Item>,
    /// Comments per file, for the formatter.
    pub comments: HashMap<FileId, Vec<Comment>>,
    pub parsed: Vec<(FileId, File)>,
    pub diags: Vec<Diag>,
}

/// Most files one policy may import, directly or not.
pub const MAX_FILES: usize = 1000;

pub fn load(loader: &dyn Loader, root: &Path) -> Loaded {
    let mut l = Loaded::default();
    let mut state = State { done: HashMap::new(), stack: vec![] };
    load_file(loader, root, None, &mut l, &mut state);
    l
}

struct State {
    done: HashMap<PathBuf, FileId>,
    /// Files being loaded, outermost first: canonical path, the import that led to it, and
    /// its path as named (for messages).
    stack: Vec<(PathBuf, Option<Span>, String)>,
}

fn load_file(loader: &dyn Loader, path: &Path, via: Option<Span>, l: &mut Loaded, st: &mut State) {
    let canon = loader.canonical(path);
    // The stack is checked first: a file on it is already in `done`, and reaching it again
    // through an import is a cycle, not a diamond.
    if let Some(pos) = st.stack.iter().position(|(p, _, _)| *p == canon) {
        // Named as the report names files (as given, `..` resolved), not by canonical paths.
        let chain: Vec<String> =
            st.stack[pos..].iter().map(|(_, _, n)| n.clone()).chain([display(&normalize(path))]).collect();
        let mut d = Diag::error(Code::ImportCycle, "import cycle").help(format!(
            "the files import each other: {}; move the shared definitions into a file both import",
            chain.join(" → ")
        ));
        if let Some(span) = via {
            d = d.primary(span, "this import closes the cycle");
        }
        l.diags.push(d);
        return;
    }
    if st.done.contains_key(&canon) {
        return;
    }
    if l.sources.len() >= MAX_FILES {
        let mut d = Diag::error(Code::ImportMissing, format!("more than {MAX_FILES} files imported"));
        if let Some(span) = via {
            d = d.primary(span, "one import too many");
        }
        l.diags.push(d.help("a policy may read at most 1000 files"));
        return;
    }
    let bytes = match loader.read(path) {
        Ok(b) => b,
        Err(e) => {
            let d = match via {
                Some(span) => {
                    Diag::error(Code::ImportMissing, format!("cannot read imported file `{}`", display(path)))
                        .primary(span, io_reason(&e))
                        .help("import paths are relative to the importing file")
                }
                None => {
                    Diag::error(Code::FileUnreadable, format!("cannot read `{}`: {}", display(path), io_reason(&e)))
                }
            };
            l.diags.push(d);
            return;
        }
    };
    let name = display(path);
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy: Arc<str> = String::from_utf8_lossy(e.as_bytes()).into();
            let line = lossy.get(..valid).map(|s| s.matches('\n').count() + 1).unwrap_or(1);
            let id = l.sources.add(path, name.clone(), lossy);
            let mut d =
                Diag::error(Code::InvalidUtf8, format!("`{name}` is not valid UTF-8 (line {line}, byte {valid})"))
                    .help("save the file as UTF-8");
            // The lossy copy keeps offsets before the first bad byte, so this span is right.
            d = d.primary(Span::new(id, valid, valid), "the first invalid byte is here");
            l.diags.push(d);
            return;
        }
    };
    let text: Arc<str> = text.into();
    let id = l.sources.add(path, name, text.clone());
    st.done.insert(canon.clone(), id);
    let (parsed, diags) = syntax::parse(id, &text);
    l.diags.extend(diags);
    l.comments.insert(id, parsed.comments);

    st.stack.push((canon, via, display(&normalize(path))));
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for item in &parsed.file.items {
        if let Item::Import(imp) = item {
            let target = dir.join(&imp.path.value);
            load_file(loader, &target, Some(imp.path.span), l, st);
        }
    }
    st.stack.pop();
    l.items.extend(parsed.file.items.iter().filter(|i| !matches!(i, Item::Import(_))).cloned());
    l.parsed.push((id, parsed.file));
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}
