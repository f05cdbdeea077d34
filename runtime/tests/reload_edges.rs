//! Reload edges end to end, with the real `gw`: a policy deployed through symbolic links (the
//! Kubernetes ConfigMap and Capistrano layouts), swapped with the old folder kept or removed;
//! and a policy file truncated by its writer, which must be a failed reload, not an outage.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, Gw};
use serde_json::Value;

fn policy(addr: SocketAddr, admin: SocketAddr, version: &str) -> String {
    format!(
        r#"gateway {{ listen "{addr}" admin "{admin}" }}
route which {{
    when    GET "/which"
    respond 200 "{version}"
}}
"#
    )
}

fn addrs() -> (SocketAddr, SocketAddr) {
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (addr, admin)
}

/// `gw serve` on `policy` (a path that may go through links), in `dir`.
fn serve(dir: tempfile::TempDir, policy: &Path, addr: SocketAddr, admin: SocketAddr) -> Gw {
    let proc = Gw::spawn_with(policy, &[], &[], addr, admin);
    Gw { addr, admin, dir, proc }
}

async fn which(gw: &Gw) -> String {
    reqwest::get(gw.url("/which")).await.unwrap().text().await.unwrap()
}

/// Wait up to 10 s for `/which` to answer `want`.
async fn serves(gw: &Gw, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = which(gw).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still serving {got:?}, not {want:?}, 10 s after the swap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_policy(gw: &Gw) -> Value {
    reqwest::get(gw.admin_url("/admin/policy")).await.unwrap().json().await.unwrap()
}

/// The ConfigMap layout: `gateway.gwp -> ..data/gateway.gwp`, `..data -> ..vN`; a new version
/// is a new folder and a new link renamed over `..data`, the old folder removed after or kept.
fn configmap_version(root: &Path, n: u32, text: &str, remove_old: bool) {
    let v = root.join(format!("..v{n}"));
    std::fs::create_dir(&v).unwrap();
    std::fs::write(v.join("gateway.gwp"), text).unwrap();
    std::os::unix::fs::symlink(format!("..v{n}"), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    if n > 1 && remove_old {
        std::fs::remove_dir_all(root.join(format!("..v{}", n - 1))).unwrap();
    }
}

async fn configmap_updates_reload(remove_old: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (addr, admin) = addrs();
    configmap_version(&root, 1, &policy(addr, admin, "v1"), remove_old);
    let file = root.join("gateway.gwp");
    std::os::unix::fs::symlink("..data/gateway.gwp", &file).unwrap();
    let gw = serve(dir, &file, addr, admin);
    assert_eq!(which(&gw).await, "v1");
    for n in 2..=3 {
        configmap_version(&root, n, &policy(addr, admin, &format!("v{n}")), remove_old);
        serves(&gw, &format!("v{n}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_reloads() {
    configmap_updates_reload(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_reloads_while_the_old_folder_stays() {
    configmap_updates_reload(false).await;
}

/// The Capistrano layout: `current -> releases/N` (absolute), the policy read as
/// `current/gateway.gwp`; a deploy renames a new `current` link over the old one.
fn capistrano_release(app: &Path, n: u32, text: &str, remove_old: bool) {
    let release: PathBuf = app.join(format!("releases/{n}"));
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("gateway.gwp"), text).unwrap();
    std::os::unix::fs::symlink(&release, app.join("current_tmp")).unwrap();
    std::fs::rename(app.join("current_tmp"), app.join("current")).unwrap();
    if n > 1 && remove_old {
        std::fs::remove_dir_all(app.join(format!("releases/{}", n - 1))).unwrap();
    }
}

async fn capistrano_deploys_reload(remove_old: bool) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().to_path_buf();
    let (addr, admin) = addrs();
    capistrano_release(&app, 1, &policy(addr, admin, "r1"), remove_old);
    let gw = serve(dir, &app.join("current/gateway.gwp"), addr, admin);
    assert_eq!(which(&gw).await, "r1");
    for n in 2..=3 {
        capistrano_release(&app, n, &policy(addr, admin, &format!("r{n}")), remove_old);
        serves(&gw, &format!("r{n}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capistrano_deploy_reloads() {
    capistrano_deploys_reload(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capistrano_deploy_reloads_while_old_releases_stay() {
    capistrano_deploys_reload(false).await;
}

/// The addresses come from the command line, so an empty policy is not a listen address change
/// (which a reload refuses anyway): only `gw::no_routes` stands between it and an outage.
#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_policy_is_a_failed_reload_and_the_old_policy_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin) = addrs();
    let file = dir.path().join("gateway.gwp");
    let routes_only = |version: &str| policy(addr, admin, version).split_once('\n').unwrap().1.to_string();
    std::fs::write(&file, routes_only("whole")).unwrap();
    let (listen_arg, admin_arg) = (addr.to_string(), admin.to_string());
    let proc = Gw::spawn_with(&file, &["--listen", &listen_arg, "--admin", &admin_arg], &[], addr, admin);
    let gw = Gw { addr, admin, dir, proc };
    assert_eq!(which(&gw).await, "whole");

    // A writer that truncates first, then is slow to write (or dies).
    std::fs::File::create(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let p = admin_policy(&gw).await;
        if p["last_reload"]["ok"] == false {
            break p;
        }
        assert!(Instant::now() < deadline, "no failed reload within 10 s: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let diagnostics = report["last_reload"]["diagnostics"].as_str().unwrap_or_default();
    assert!(diagnostics.contains("gw::no_routes"), "{report}");
    assert_eq!(report["generation"], 1, "{report}");
    let resp = reqwest::get(gw.url("/which")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["x-gw-policy"].to_str().unwrap().starts_with("1-"));
    assert_eq!(resp.text().await.unwrap(), "whole", "the old policy keeps serving");

    // The writer finishes: the new policy is served.
    std::fs::write(&file, routes_only("rewritten")).unwrap();
    serves(&gw, "rewritten").await;
}
