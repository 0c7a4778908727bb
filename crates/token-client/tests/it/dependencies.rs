//! The "no dependency on the service" rule, checked with the real `cargo tree` (offline,
//! locked): token-client's normal dependencies hold neither the token-service crate nor
//! the server stack it brings (axum, prometheus-client), nor the emulator.

use std::process::Command;

use crate::support::repo;

#[test]
fn cargo_tree_shows_no_server_dependency() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "token-client",
            "-e",
            "normal",
            "--locked",
            "--offline",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packages: Vec<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(packages.contains(&"token-client"), "{tree}");
    assert!(packages.contains(&"reqwest"), "{tree}");
    for forbidden in ["token-service", "gcp-emulator", "axum", "prometheus-client"] {
        assert!(
            !packages.contains(&forbidden),
            "token-client depends on {forbidden}:\n{tree}"
        );
    }
}
