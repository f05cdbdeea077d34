//! Watching the files a policy reads, to reload it when one changes.
//!
//! [`watch_files`] watches the *parent directories* of the given files, not the files: editors
//! save by writing a temporary file and renaming it over the original, which leaves a watch on
//! the old inode behind, and a file deleted then created again must be noticed too. Events are
//! kept when they name one of the files or a symbolic link on the way to one (each compared as
//! `real parent dir / name`: a ConfigMap's `..data` link swapped for a new one counts even while
//! the folder it pointed to stays), and debounced: a burst of events (write,
//! rename, write, chmod) calls `on_change` once, `debounce` after the last event of the burst
//! (or at the latest `MAX_WAIT_FACTOR` × `debounce` after its first, so a file rewritten
//! without pause still reloads).
//!
//! Reads are not changes: the open/close-without-write events that reading the policy causes
//! are ignored, so a reload does not trigger itself.
//!
//! `on_change` runs on the watcher's own thread (`gw-watch`); send into a channel from it
//! (`tokio::sync::mpsc::Sender::try_send` or `blocking_send`), do not reload there. After a
//! reload the policy may read other files: pass the new list to [`Watcher::set_files`].
//! Dropping the [`Watcher`] stops it; no call is made after the drop.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

/// A burst of events that never settles still fires after this many `debounce` intervals.
pub const MAX_WAIT_FACTOR: u32 = 10;

/// Watches a set of files; see the module documentation. Dropping it stops the watch.
#[must_use = "dropping the Watcher stops the watch"]
pub struct Watcher {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
}

struct Shared {
    state: Mutex<State>,
    stopped: AtomicBool,
}

struct State {
    notify: RecommendedWatcher,
    files: Vec<PathBuf>,
    /// Paths whose events count: `canonical(parent)/name` of each file, and its resolved path.
    targets: HashSet<PathBuf>,
    /// Directories being watched.
    dirs: BTreeSet<PathBuf>,
    /// Watched directories that were removed or moved away: watched again at the next refresh.
    lost: HashSet<PathBuf>,
}

enum Msg {
    Fs(notify::Result<Event>),
    Stop,
}

/// Watch `files` (which need not exist, but whose directories must) and call `on_change` once
/// per settled burst of changes to any of them. Fails when the watcher cannot be created or a
/// directory cannot be watched.
pub fn watch_files(
    files: Vec<PathBuf>,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<Watcher, String> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let notify = notify::recommended_watcher(move |res: notify::Result<Event>| {
        let _ = events.send(Msg::Fs(res));
    })
    .map_err(|e| format!("cannot start watching files: {e}"))?;
    let mut state =
        State { notify, files: Vec::new(), targets: HashSet::new(), dirs: BTreeSet::new(), lost: HashSet::new() };
    state.apply(files)?;
    let shared = Arc::new(Shared { state: Mutex::new(state), stopped: AtomicBool::new(false) });
    let thread_shared = shared.clone();
    let on_change: Box<dyn Fn() + Send> = Box::new(on_change);
    std::thread::Builder::new()
        .name("gw-watch".into())
        .spawn(move || run(thread_shared, rx, debounce, on_change))
        .map_err(|e| format!("cannot start the file watcher thread: {e}"))?;
    Ok(Watcher { shared, tx })
}

impl Watcher {
    /// Watch this list of files instead of the current one (directories no longer needed are
    /// unwatched). On an error the files that could be watched still are, and the others are
    /// tried again after the next change.
    pub fn set_files(&self, files: Vec<PathBuf>) -> Result<(), String> {
        self.shared.lock().apply(files)
    }

    /// The files being watched, as given.
    pub fn files(&self) -> Vec<PathBuf> {
        self.shared.lock().files.clone()
    }

    /// The directories being watched (canonical paths).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.shared.lock().dirs.iter().cloned().collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each field is replaced whole).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn apply(&mut self, files: Vec<PathBuf>) -> Result<(), String> {
        let (targets, dirs, mut errors) = resolve(&files);
        for old in self.dirs.difference(&dirs) {
            let _ = self.notify.unwatch(old);
        }
        let mut watched = BTreeSet::new();
        for dir in dirs {
            let have = self.dirs.contains(&dir) && !self.lost.contains(&dir);
            if !have {
                // A lost directory may still be registered with the backend.
                let _ = self.notify.unwatch(&dir);
                if let Err(e) = self.notify.watch(&dir, RecursiveMode::NonRecursive) {
                    errors.push(format!("cannot watch {}: {e}", dir.display()));
                    continue;
                }
            }
            watched.insert(dir);
        }
        self.dirs = watched;
        self.lost.clear();
        self.targets = targets;
        self.files = files;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Whether an event is a change to one of the files (marking lost directories on the way).
    fn relevant(&mut self, ev: &Event) -> bool {
        if ev.need_rescan() {
            // The kernel queue overflowed: anything may have changed.
            return true;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            // Opening and reading the file (as the reload itself does) is no change.
            EventKind::Access(_) => return false,
            _ => {}
        }
        let mut hit = false;
        for p in &ev.paths {
            if self.targets.contains(p) {
                hit = true;
            } else if self.dirs.contains(p)
                && matches!(ev.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)))
            {
                // The directory itself went away: its files with it.
                self.lost.insert(p.clone());
                hit = true;
            }
        }
        hit
    }
}

/// The paths to match and the directories to watch for `files`, with an error per file whose
/// directory cannot be resolved.
fn resolve(files: &[PathBuf]) -> (HashSet<PathBuf>, BTreeSet<PathBuf>, Vec<String>) {
    let mut targets = HashSet::new();
    let mut dirs = BTreeSet::new();
    let mut errors = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_default();
    for file in files {
        let abs = if file.is_absolute() { file.clone() } else { cwd.join(file) };
        if abs.file_name().is_none() {
            errors.push(format!("cannot watch {}: not a file path", file.display()));
            continue;
        }
        for step in chain(&abs) {
            let Some(dir) = step.parent() else { continue };
            if !dir.is_dir() {
                errors.push(format!("cannot watch {}: directory {} does not exist", file.display(), dir.display()));
                continue;
            }
            dirs.insert(dir.to_path_buf());
            targets.insert(step);
        }
    }
    (targets, dirs, errors)
}

/// Most symbolic links followed for one path (as the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Every path along the way to `abs`: each symbolic link met (a Kubernetes ConfigMap's
/// `policy.gwp -> ..data/policy.gwp` and `..data -> ..2026_12_04_v1`, a Capistrano
/// `current -> releases/42`), then the real file. Each is named under its real parent
/// directory, as events name it, so replacing any link of the chain is seen, even while the
/// folder it pointed to stays. Components that do not exist yet end the resolution as written.
fn chain(abs: &Path) -> Vec<PathBuf> {
    let mut steps = Vec::new();
    let mut here = PathBuf::new();
    let mut rest: VecDeque<PathBuf> = abs.components().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut links = 0;
    while let Some(part) = rest.pop_front() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir | Component::Prefix(_)) => here = part,
            Some(Component::CurDir) | None => {}
            Some(Component::ParentDir) => {
                here.pop();
            }
            Some(Component::Normal(name)) => {
                let next = here.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if links < MAX_LINKS => {
                        links += 1;
                        steps.push(next);
                        // The link's target continues from its own folder (or from the root).
                        for c in target.components().rev() {
                            rest.push_front(PathBuf::from(c.as_os_str()));
                        }
                    }
                    _ => here = next,
                }
            }
        }
    }
    steps.push(here);
    steps
}

fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Msg>, debounce: Duration, on_change: Box<dyn Fn() + Send>) {
    let max_wait = debounce.saturating_mul(MAX_WAIT_FACTOR);
    // (when to fire, when the burst began)
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let msg = match pending {
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
            Some((at, _)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    pending = None;
                    fire(&shared, &on_change);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        match msg {
            Msg::Stop => return,
            Msg::Fs(Err(e)) => tracing::warn!("file watch: {e}"),
            Msg::Fs(Ok(ev)) => {
                if shared.lock().relevant(&ev) {
                    let now = Instant::now();
                    let first = pending.map_or(now, |(_, first)| first);
                    pending = Some(((now + debounce).min(first + max_wait), first));
                }
            }
        }
    }
}

fn fire(shared: &Shared, on_change: &(dyn Fn() + Send)) {
    if shared.stopped.load(Ordering::Acquire) {
        return;
    }
    {
        // Re-resolve the files: a symlink may point elsewhere now, a directory may be back.
        let mut state = shared.lock();
        let files = state.files.clone();
        if let Err(e) = state.apply(files) {
            tracing::warn!("file watch: {e}");
        }
    }
    if catch_unwind(AssertUnwindSafe(on_change)).is_err() {
        tracing::error!("file watch: the change callback panicked");
    }
}
