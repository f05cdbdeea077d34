#[test]
fn dump() {
    for p in std::env::var("FILES").unwrap().split(':') {
        let t = std::fs::read_to_string(p).unwrap();
        match gw_compiler::fmt::format_source(&t) { Ok(s) => println!("=== {p}\n{s}"), Err(e) => println!("=== {p} ERR {e}") }
    }
}
