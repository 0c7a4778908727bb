//! Who may change or read the key files: the operator's `SIGNING_KEY_FILE` and the generated
//! key in `DATA_DIR`. Checks on Unix, nothing elsewhere. Uses `error` only.

use std::path::Path;

use crate::error::StartupError;

/// Refuses a `DATA_DIR` that other users can write (group or others, without the sticky
/// bit) or that belongs to another user (root excepted). A missing folder is fine: it is
/// created with mode 0700.
pub fn check_data_dir(dir: &Path) -> Result<(), StartupError> {
    imp::check_data_dir(dir).map_err(|e| StartupError::setting("DATA_DIR", e.0))
}

/// Refuses a generated key that anyone but its owner may read or write, or that belongs
/// to another user.
pub fn check_generated_key(path: &Path) -> Result<(), StartupError> {
    imp::check_generated_key(path).map_err(|e| StartupError::setting("DATA_DIR", e.0))
}

/// Refuses an operator's key file that other users can change; warns when every user may
/// read it.
pub fn check_key_file(path: &Path) -> Result<Vec<String>, StartupError> {
    imp::check_key_file(path).map_err(|e| StartupError::setting("SIGNING_KEY_FILE", e.0))
}

/// Why a key file or its folder is not safe to use: a sentence that names the file and the
/// command that fixes it (the wrappers above add the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsafeFile(pub String);

#[cfg(unix)]
mod imp {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Path;

    const WRITABLE_BY_OTHERS: u32 = 0o022;
    const STICKY: u32 = 0o1000;

    fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn mode(m: &std::fs::Metadata) -> String {
        format!("{:04o}", m.mode() & 0o7777)
    }

    pub fn check_data_dir(dir: &Path) -> Result<(), super::UnsafeFile> {
        let Ok(meta) = std::fs::metadata(dir) else {
            return Ok(());
        };
        let shown = dir.display();
        if !meta.is_dir() {
            return Err(super::UnsafeFile(format!(
                "'{shown}' is not a folder; point DATA_DIR at a folder"
            )));
        }
        if meta.mode() & WRITABLE_BY_OTHERS != 0 && meta.mode() & STICKY == 0 {
            return Err(super::UnsafeFile(format!(
                "'{shown}' can be written by other users (mode {}), who could replace the signing key; run `chmod 700 {shown}`, or point DATA_DIR at a folder only this user can write",
                mode(&meta)
            )));
        }
        let me = euid();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(super::UnsafeFile(format!(
                "'{shown}' belongs to user {}, not to the user Token Service runs as ({me}), who could replace the signing key; run `chown {me} {shown}`, or point DATA_DIR at a folder of this user",
                meta.uid()
            )));
        }
        Ok(())
    }

    pub fn check_generated_key(path: &Path) -> Result<(), super::UnsafeFile> {
        let meta = std::fs::metadata(path)
            .map_err(|e| super::UnsafeFile(format!("cannot read '{}': {e}", path.display())))?;
        let shown = path.display();
        let me = euid();
        if meta.uid() != me {
            return Err(super::UnsafeFile(format!(
                "the signing key '{shown}' belongs to user {}, not to the user Token Service runs as ({me}); if it is the key Token Service generated, run `chown {me} {shown}`, else delete it and a new one is generated",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(super::UnsafeFile(format!(
                "the signing key '{shown}' can be read or written by other users (mode {}); run `chmod 600 {shown}`",
                mode(&meta)
            )));
        }
        Ok(())
    }

    pub fn check_key_file(path: &Path) -> Result<Vec<String>, super::UnsafeFile> {
        // Kubernetes mounts secrets as symlinks into a root-owned folder: judge the file
        // the link leads to, and the folder that holds it.
        let Ok(meta) = std::fs::metadata(path) else {
            // Unreadable or missing: reading it names the problem.
            return Ok(Vec::new());
        };
        let shown = path.display();
        if meta.mode() & WRITABLE_BY_OTHERS != 0 {
            return Err(super::UnsafeFile(format!(
                "'{shown}' can be written by other users (mode {}), who could replace the signing key; run `chmod go-w {shown}` (Kubernetes: defaultMode: 0440 on the secret volume)",
                mode(&meta)
            )));
        }
        let me = euid();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(super::UnsafeFile(format!(
                "'{shown}' belongs to user {}, neither the user Token Service runs as ({me}) nor root, so that user can replace the signing key; run `chown {me} {shown}`",
                meta.uid()
            )));
        }
        if let Some(folder) = std::fs::canonicalize(path)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf))
            && let Ok(dir) = std::fs::metadata(&folder)
            && dir.mode() & WRITABLE_BY_OTHERS != 0
            && dir.mode() & STICKY == 0
        {
            return Err(super::UnsafeFile(format!(
                "the folder '{}' holding '{shown}' can be written by other users (mode {}), who could replace the signing key; run `chmod go-w {}`",
                folder.display(),
                mode(&dir),
                folder.display()
            )));
        }
        let mut warnings = Vec::new();
        if meta.mode() & 0o004 != 0 {
            warnings.push(format!(
                "SIGNING_KEY_FILE '{shown}' is readable by every user of this host (mode {}): fine in a single-purpose container, elsewhere run `chmod 600 {shown}` (Kubernetes: defaultMode: 0440 with the pod's fsGroup)",
                mode(&meta)
            ));
        }
        Ok(warnings)
    }
}

#[cfg(not(unix))]
mod imp {
    use std::path::Path;

    pub fn check_data_dir(_dir: &Path) -> Result<(), super::UnsafeFile> {
        Ok(())
    }

    pub fn check_generated_key(_path: &Path) -> Result<(), super::UnsafeFile> {
        Ok(())
    }

    pub fn check_key_file(_path: &Path) -> Result<Vec<String>, super::UnsafeFile> {
        Ok(Vec::new())
    }
}
