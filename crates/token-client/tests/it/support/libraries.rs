//! Google's own libraries as commands: Python google-auth (`.venv` at the repository root, or
//! TOKEN_CLIENT_TEST_PYTHON / TOKEN_SERVICE_TEST_PYTHON) and Node google-auth-library
//! (`crates/token-client/tests/node/node_modules`, or TOKEN_CLIENT_TEST_NODE_MODULES), as
//! `.ci/run` installs them.
//!
//! Both scripts print one JSON line. A caller that clears the environment keeps the
//! command's own variables (NODE_PATH) with [`clear_env_keeping_own`].

use std::path::PathBuf;
use std::process::Command;

use super::{env_setting, repo};

/// The Python interpreter with google-auth.
pub fn python() -> Command {
    let python = env_setting("TOKEN_CLIENT_TEST_PYTHON")
        .or_else(|| env_setting("TOKEN_SERVICE_TEST_PYTHON"))
        .map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "no Python with google-auth at {}: run .ci/run (it creates .venv) or set TOKEN_CLIENT_TEST_PYTHON",
        python.display()
    );
    Command::new(python)
}

/// `support/google_auth.py` (default credentials, one token, as JSON).
pub fn google_auth_py() -> Command {
    let mut command = python();
    command.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/google_auth.py"
    ));
    command
}

/// `tests/node/google_auth.js` with NODE_PATH at google-auth-library's folder.
pub fn google_auth_js() -> Command {
    let node_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node"));
    let modules = env_setting("TOKEN_CLIENT_TEST_NODE_MODULES")
        .map_or_else(|| node_dir.join("node_modules"), PathBuf::from);
    assert!(
        modules.join("google-auth-library").exists(),
        "no google-auth-library in {}: run .ci/run (npm ci in crates/token-client/tests/node) or set TOKEN_CLIENT_TEST_NODE_MODULES",
        modules.display()
    );
    let mut command = Command::new("node");
    command
        .arg(node_dir.join("google_auth.js"))
        .env("NODE_PATH", modules);
    command
}

/// Clears `command`'s inherited environment but keeps what was set on it (NODE_PATH), and
/// PATH.
pub fn clear_env_keeping_own(command: &mut Command) {
    let own: Vec<_> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    command
        .env_clear()
        .envs(own)
        .env("PATH", env_setting("PATH").unwrap_or_default());
}
