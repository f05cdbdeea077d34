//! The policy file watcher on its own: what counts as a change, and debouncing.
//!
//! Each test waits for the debounce (200 ms) to settle and then a further second for
//! stragglers before it counts the calls.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gw_runtime::watch::{watch_files, Watcher};

const DEBOUNCE: Duration = Duration::from_millis(200);
const STRAGGLERS: Duration = Duration::from_secs(1);

struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` calls came (or 5 s passed), then for stragglers; the count.
    fn settle(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.get() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(STRAGGLERS);
        self.get()
    }
}

fn watch(files: &[&Path]) -> (Watcher, Calls) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let files: Vec<PathBuf> = files.iter().map(|p| p.to_path_buf()).collect();
    let w = watch_files(files, DEBOUNCE, move || {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .expect("watching starts");
    (w, Calls(calls))
}

fn policy_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.gwp");
    std::fs::write(&file, "gateway {}\n").unwrap();
    (dir, file)
}

#[test]
fn rewritten_in_place_is_one_call() {
    let (_dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    std::fs::write(&file, "gateway { listen \"127.0.0.1:1\" }\n").unwrap();
    assert_eq!(calls.settle(1), 1);
}

#[test]
fn write_temp_then_rename_is_one_call() {
    let (dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    let tmp = dir.path().join(".gateway.gwp.swp");
    std::fs::write(&tmp, "gateway { }\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(calls.settle(1), 1);
    // The watch survives the replacement: the new file is watched too.
    std::fs::write(&file, "gateway { }\n# again\n").unwrap();
    assert_eq!(calls.settle(2), 2);
}

#[test]
fn a_burst_of_writes_is_one_call() {
    let (_dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    let start = Instant::now();
    for i in 0..20 {
        std::fs::write(&file, format!("gateway {{}}\n# {i}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(4));
    }
    assert!(start.elapsed() < Duration::from_millis(150), "the burst took {:?}", start.elapsed());
    assert_eq!(calls.settle(1), 1);
}

#[test]
fn an_editor_save_sequence_is_one_call() {
    // vim-like: rename the original to a backup, write the new file, chmod, delete the backup.
    let (dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    let backup = dir.path().join("gateway.gwp~");
    std::fs::rename(&file, &backup).unwrap();
    std::fs::write(&file, "gateway { }\n").unwrap();
    let perms = std::fs::metadata(&backup).unwrap().permissions();
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::remove_file(&backup).unwrap();
    assert_eq!(calls.settle(1), 1);
}

#[test]
fn an_unrelated_file_in_the_same_directory_is_no_call() {
    let (dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "hello").unwrap();
    std::fs::write(&other, "hello again").unwrap();
    std::fs::rename(&other, dir.path().join("notes.old")).unwrap();
    std::fs::write(dir.path().join("gateway.gwp.bak"), "x").unwrap();
    assert_eq!(calls.settle(1), 0);
}

#[test]
fn reading_the_file_is_no_call() {
    // The reload reads the files it watches: that must not trigger another reload.
    let (_dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    for _ in 0..5 {
        let _ = std::fs::read_to_string(&file).unwrap();
    }
    assert_eq!(calls.settle(1), 0);
}

#[test]
fn an_import_in_a_second_directory_is_a_call() {
    let (_dir, file) = policy_dir();
    let lib = tempfile::tempdir().unwrap();
    let import = lib.path().join("shared.gwp");
    std::fs::write(&import, "# shared\n").unwrap();
    let (w, calls) = watch(&[&file, &import]);
    assert_eq!(w.dirs().len(), 2);
    std::fs::write(&import, "# shared, changed\n").unwrap();
    assert_eq!(calls.settle(1), 1);
    std::fs::write(&file, "gateway { }\n").unwrap();
    assert_eq!(calls.settle(2), 2);
}

#[test]
fn a_deleted_file_is_a_call_and_so_is_its_return() {
    let (_dir, file) = policy_dir();
    let (_w, calls) = watch(&[&file]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(calls.settle(1), 1);
    std::fs::write(&file, "gateway { }\n").unwrap();
    assert_eq!(calls.settle(2), 2);
}

#[test]
fn a_file_that_does_not_exist_yet_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys/users.keys");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let (_w, calls) = watch(&[&keys]);
    std::fs::write(&keys, "alice sk-1\n").unwrap();
    assert_eq!(calls.settle(1), 1);
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/gateway.gwp");
    let err = watch_files(vec![missing], DEBOUNCE, || {}).err().expect("an error");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn set_files_switches_what_is_watched() {
    let (dir, first) = policy_dir();
    let other_dir = tempfile::tempdir().unwrap();
    let second = other_dir.path().join("imported.gwp");
    std::fs::write(&second, "# v1\n").unwrap();
    let (w, calls) = watch(&[&first]);
    assert_eq!(w.dirs().len(), 1);

    w.set_files(vec![second.clone()]).unwrap();
    assert_eq!(w.files(), vec![second.clone()]);
    assert_eq!(w.dirs(), vec![std::fs::canonicalize(other_dir.path()).unwrap()]);
    std::fs::write(&first, "gateway { }\n").unwrap();
    assert_eq!(calls.settle(1), 0, "the old file is no longer watched");
    std::fs::write(&second, "# v2\n").unwrap();
    assert_eq!(calls.settle(1), 1);

    // Back to both, relative paths resolved against the working directory.
    let relative = pathdiff(&first);
    w.set_files(vec![relative, second.clone()]).unwrap();
    std::fs::write(&first, "gateway { }\n# again\n").unwrap();
    assert_eq!(calls.settle(2), 2);
    drop(dir);
}

/// `path` relative to the current directory when it can be (`../../tmp/…`), else as is.
fn pathdiff(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut up = PathBuf::new();
    for ancestor in cwd.ancestors() {
        if let Ok(rest) = path.strip_prefix(ancestor) {
            return up.join(rest);
        }
        up.push("..");
    }
    path.to_path_buf()
}

/// The Kubernetes ConfigMap layout: gateway.gwp -> ..data/gateway.gwp, ..data -> ..vN, updated
/// by pointing a new link at a new folder and renaming it over ..data; the old folder removed
/// after (as the kubelet does) or kept.
fn configmap_version(root: &Path, n: u32, remove_old: bool) {
    let v = root.join(format!("..v{n}"));
    std::fs::create_dir(&v).unwrap();
    std::fs::write(v.join("gateway.gwp"), format!("# v{n}\n")).unwrap();
    std::os::unix::fs::symlink(format!("..v{n}"), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    if n > 1 && remove_old {
        std::fs::remove_dir_all(root.join(format!("..v{}", n - 1))).unwrap();
    }
}

fn configmap_swaps(remove_old: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    configmap_version(root, 1, remove_old);
    let file = root.join("gateway.gwp");
    std::os::unix::fs::symlink("..data/gateway.gwp", &file).unwrap();
    let (_w, calls) = watch(&[&file]);
    configmap_version(root, 2, remove_old);
    assert_eq!(calls.settle(1), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# v2\n");
    configmap_version(root, 3, remove_old);
    assert_eq!(calls.settle(2), 2, "the watch follows the link to its new directory");
}

#[test]
fn a_configmap_swap_is_a_call_each_time() {
    configmap_swaps(true);
}

#[test]
fn a_configmap_swap_is_a_call_each_time_while_the_old_folder_stays() {
    configmap_swaps(false);
}

/// The Capistrano layout: app/current -> releases/N (an absolute link), the policy read as
/// app/current/gateway.gwp; a deploy renames a new `current` link over the old one.
fn capistrano_release(app: &Path, n: u32, remove_old: bool) {
    let release = app.join(format!("releases/{n}"));
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("gateway.gwp"), format!("# release {n}\n")).unwrap();
    std::os::unix::fs::symlink(&release, app.join("current_tmp")).unwrap();
    std::fs::rename(app.join("current_tmp"), app.join("current")).unwrap();
    if n > 1 && remove_old {
        std::fs::remove_dir_all(app.join(format!("releases/{}", n - 1))).unwrap();
    }
}

fn capistrano_deploys(remove_old: bool) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path();
    capistrano_release(app, 1, remove_old);
    let file = app.join("current/gateway.gwp");
    let (_w, calls) = watch(&[&file]);
    capistrano_release(app, 2, remove_old);
    assert_eq!(calls.settle(1), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# release 2\n");
    capistrano_release(app, 3, remove_old);
    assert_eq!(calls.settle(2), 2, "the watch follows `current` to the new release");
    // An edit inside the release now served is a change; one in an old release is not.
    std::fs::write(app.join("releases/3/gateway.gwp"), "# release 3, edited\n").unwrap();
    assert_eq!(calls.settle(3), 3);
    if !remove_old {
        std::fs::write(app.join("releases/1/gateway.gwp"), "# stale\n").unwrap();
        assert_eq!(calls.settle(4), 3, "an old release is not watched");
    }
}

#[test]
fn a_capistrano_deploy_is_a_call_each_time() {
    capistrano_deploys(true);
}

#[test]
fn a_capistrano_deploy_is_a_call_each_time_while_old_releases_stay() {
    capistrano_deploys(false);
}

#[test]
fn a_link_through_a_parent_folder_to_a_swapped_link_is_followed() {
    // conf/gateway.gwp -> ../deploy/current/gateway.gwp, deploy/current -> releases/N.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("conf")).unwrap();
    let deploy = root.join("deploy");
    capistrano_release(&deploy, 1, false);
    let file = root.join("conf/gateway.gwp");
    std::os::unix::fs::symlink("../deploy/current/gateway.gwp", &file).unwrap();
    let (_w, calls) = watch(&[&file]);
    capistrano_release(&deploy, 2, false);
    assert_eq!(calls.settle(1), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# release 2\n");
    std::fs::write(deploy.join("releases/2/gateway.gwp"), "# release 2, edited\n").unwrap();
    assert_eq!(calls.settle(2), 2, "the file the chain ends at now is watched");
}

#[test]
fn no_call_after_drop() {
    let (_dir, file) = policy_dir();
    let (w, calls) = watch(&[&file]);
    std::fs::write(&file, "gateway { }\n").unwrap();
    drop(w);
    std::thread::sleep(DEBOUNCE + STRAGGLERS);
    assert_eq!(calls.get(), 0);
}
