//! Loading a policy into a servable `Policy`: compile it in serve mode (from disk, or the
//! embedded default; the compiler refuses what the runtime does not implement, and lowers it), and
//! fingerprint the result.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gw_compile::{compile_for_serve, DiskLoader, Loader, MemLoader, Style};
use gw_engine::graph::Graph;
use sha2::{Digest, Sha256};

/// Where the policy comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// The default policy built into the binary (`policies/default.gwp` and what it reads).
    Embedded,
    File(PathBuf),
}

impl PolicySource {
    /// A path named in the policy, relative to the policy file's folder (as imports and key
    /// files are); the embedded policy's paths are relative to the working directory.
    pub fn resolve(&self, path: &str) -> String {
        match self {
            PolicySource::File(policy) if std::path::Path::new(path).is_relative() => policy
                .parent()
                .map(|dir| dir.join(path).to_string_lossy().into_owned())
                .unwrap_or_else(|| path.to_string()),
            _ => path.to_string(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PolicySource::Embedded => "the embedded default policy".into(),
            PolicySource::File(p) => p.display().to_string(),
        }
    }
}

/// The default policy's files, embedded so `gw serve` works with no files around it.
const EMBEDDED_ROOT: &str = "default.gwp";
const EMBEDDED: &[(&str, &str)] = &[
    ("default.gwp", include_str!("../../policies/default.gwp")),
    ("tiers.gwp", include_str!("../../policies/tiers.gwp")),
    ("keys/demo.keys", include_str!("../../policies/keys/demo.keys")),
];

/// A compiled policy as the server holds it. Immutable; replaced whole on reload.
pub struct Policy {
    pub graph: Graph,
    /// 1 for the first policy; +1 on every successful reload.
    pub generation: u64,
    /// SHA-256 over the content of every file the policy read, hex.
    pub hash: String,
    pub files: Vec<PathBuf>,
    pub loaded_at: SystemTime,
    /// Warnings from compiling, rendered.
    pub warnings: Vec<String>,
}

impl Policy {
    /// The first 12 hex digits of the content hash: what `x-gw-policy` and logs show.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }
}

/// Why a policy could not be loaded: rendered diagnostics, ready to print.
#[derive(Debug)]
pub struct LoadError {
    pub rendered: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

/// Compile `source` in serve mode (unset `env(...)` variables are errors).
pub fn load(source: &PolicySource, generation: u64, style: Style) -> Result<Policy, LoadError> {
    match source {
        PolicySource::Embedded => {
            let loader = EMBEDDED.iter().fold(MemLoader::default(), |l, (p, t)| l.with(*p, *t));
            load_with(&loader, Path::new(EMBEDDED_ROOT), generation, style)
        }
        PolicySource::File(path) => load_with(&DiskLoader, path, generation, style),
    }
}

/// A loader that keeps the bytes it handed to the compiler, so the policy's hash names exactly
/// what was compiled: reading the files again afterwards could see a rewrite made meanwhile.
struct Recording<'a> {
    inner: &'a dyn Loader,
    read: RefCell<HashMap<PathBuf, Vec<u8>>>,
}

impl Loader for Recording<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = self.inner.read(path)?;
        // The first read is the one compiled (the compiler reads each file once).
        self.read.borrow_mut().entry(path.to_path_buf()).or_insert_with(|| bytes.clone());
        Ok(bytes)
    }

    fn canonical(&self, path: &Path) -> PathBuf {
        self.inner.canonical(path)
    }
}

fn load_with(loader: &dyn Loader, root: &Path, generation: u64, style: Style) -> Result<Policy, LoadError> {
    let loader = Recording { inner: loader, read: RefCell::new(HashMap::new()) };
    let compiled = compile_for_serve(&loader, root, style).map_err(|rendered| LoadError { rendered })?;
    let read = loader.read.into_inner();
    let mut hasher = Sha256::new();
    for file in &compiled.files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(read.get(file).map(Vec::as_slice).unwrap_or_default());
    }
    Ok(Policy {
        graph: compiled.graph,
        generation,
        hash: hex::encode(hasher.finalize()),
        files: compiled.files,
        loaded_at: SystemTime::now(),
        warnings: compiled.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A file rewritten after each read: the compiler sees `first`, anything reading it again
    /// sees `second`.
    struct Rewritten {
        reads: Cell<u32>,
        first: &'static str,
        second: &'static str,
    }

    impl Loader for Rewritten {
        fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
            self.reads.set(self.reads.get() + 1);
            let text = if self.reads.get() == 1 { self.first } else { self.second };
            Ok(text.as_bytes().to_vec())
        }
    }

    #[test]
    fn the_hash_names_the_bytes_that_were_compiled() {
        let first = "route a {\n    when GET \"/a\"\n    respond 200 \"a\"\n}\n";
        let second = "route b {\n    when GET \"/b\"\n    respond 200 \"b\"\n}\n";
        let loader = Rewritten { reads: Cell::new(0), first, second };
        let policy = load_with(&loader, Path::new("p.gwp"), 1, Style::Plain).expect("compiles");
        let mut expected = Sha256::new();
        expected.update(b"p.gwp");
        expected.update(first.as_bytes());
        assert_eq!(policy.hash, hex::encode(expected.finalize()), "the hash of what was compiled");
        assert_eq!(policy.graph.routes()[0].name, "a");
    }
}
