//! Loading a policy into a servable `Policy`: compile it in serve mode (from disk, or the
//! embedded default; the compiler refuses what the runtime does not implement), lower it, and
//! fingerprint the result.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gw_compiler::diagnostics::{render, Style};
use gw_compiler::graph::Graph;
use gw_compiler::load::{DiskLoader, Loader, MemLoader};
use gw_compiler::{compile, lower, Options};
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

fn load_with(loader: &dyn Loader, root: &Path, generation: u64, style: Style) -> Result<Policy, LoadError> {
    let out = compile(loader, root, &Options::serve());
    let rendered: Vec<String> = out.diagnostics.iter().map(|d| render(d, &out.sources, style)).collect();
    let has_errors = out.has_errors();
    let Some(program) = out.program.filter(|_| !has_errors) else {
        let errors = out.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(LoadError {
            rendered: format!("{}\n{} error(s) in {}", rendered.join("\n"), errors, root.display()),
        });
    };
    let graph = lower::lower(&program).map_err(|d| LoadError { rendered: render(&d, &program.sources, style) })?;
    let mut hasher = Sha256::new();
    for file in &program.files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(loader.read(file).unwrap_or_default());
    }
    Ok(Policy {
        graph,
        generation,
        hash: hex::encode(hasher.finalize()),
        files: program.files.clone(),
        loaded_at: SystemTime::now(),
        warnings: rendered,
    })
}
