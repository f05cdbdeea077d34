//! The path a route matches is the path the upstream reads: an escaped letter cannot route
//! `/admin` past its `auth` to a wider public route while the upstream decodes it to `/admin`.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{users_keys, Gw, GwSpec, Mock};

const POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route admin {
    when GET "/admin/*"
    auth users
    to   mock
}
route public {
    when GET "/*"
    auth none
    to   mock
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_escaped_path_is_routed_as_the_upstream_reads_it() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    let client = reqwest::Client::new();
    for disguised in ["/%61dmin/users", "/%61%64min/users", "/adm%69n/users", "/admin/%75sers"] {
        let resp = client.get(gw.url(disguised)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{disguised} must meet the admin route's auth");
    }
    assert!(mock.requests().await.is_empty(), "nothing reached the upstream without a key");

    // With the key, the upstream gets the path in the normal form the route matched.
    let resp = client.get(gw.url("/%61dmin/a%3Ab%20c")).header("x-api-key", "sk-test-1").send().await.unwrap();
    // (The mock answers 404 to a path it does not serve; what matters is what it was sent.)
    assert_ne!(resp.status(), 401);
    let seen = mock.requests().await;
    assert_eq!(seen[0]["path"], "/admin/a:b%20c");

    // Paths another server could read differently are refused, whichever route they would
    // take (sent raw: an HTTP client library would resolve some of them itself).
    for bad in ["/%2e%2e/admin/users", "/admin%2fusers", "/x/%zz", "/x/%2E/y", "/a/../admin/users"] {
        let answer = raw_get(&gw, bad);
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        assert!(answer.contains("\"invalid_path\""), "{bad}: {answer}");
    }
    assert!(mock.requests().await.len() == 1, "only the authenticated request reached the upstream");
}

fn raw_get(gw: &Gw, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
