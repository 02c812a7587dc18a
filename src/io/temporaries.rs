//! Temporary files and folders that must not outlive an interrupted run.
//!
//! A temporary file is deleted when its owner is dropped, but a process ended by SIGINT or
//! SIGTERM drops nothing: a 130 MB half-written import would stay behind. Each temporary
//! path is registered here while it exists, and the handler that the binaries install with
//! [`remove_temporaries_on_signal`] deletes them before exiting.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Held while a set of files is staged and renamed into place; the signal handler waits for
/// it, so an interrupt never leaves half of a set renamed, nor races a write into a folder it
/// is removing.
static CRITICAL: Mutex<()> = Mutex::new(());

/// A section the signal handler will not interrupt (it waits until the guard is dropped).
pub(crate) fn critical_section() -> std::sync::MutexGuard<'static, ()> {
    CRITICAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered temporary path; unregistered when dropped (its owner deletes it).
pub(crate) struct Registered(PathBuf);

/// Creates a temporary file or folder with `create` and registers its path (`path_of`) for
/// removal on a signal, until the returned guard is dropped. Both happen under the registry's
/// lock, so a signal cannot fall between them.
pub(crate) fn create_registered<T>(
    create: impl FnOnce() -> std::io::Result<T>,
    path_of: impl FnOnce(&T) -> &Path,
) -> std::io::Result<(T, Registered)> {
    let mut paths = lock();
    let value = create()?;
    let path = path_of(&value).to_path_buf();
    paths.push(path.clone());
    Ok((value, Registered(path)))
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut paths = lock();
        if let Some(at) = paths.iter().rposition(|p| *p == self.0) {
            paths.swap_remove(at);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a valid list; keep using it.
    TEMPORARIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes SIGINT and SIGTERM (Ctrl-C, `kill`) delete the registered temporary files and
/// folders, then exit with status 130. For a program's `main`; a failure to install the
/// handler leaves the default behaviour (temporaries may stay behind).
pub fn remove_temporaries_on_signal() {
    let _ = ctrlc::set_handler(|| {
        remove_temporaries();
        std::process::exit(130);
    });
}

/// Deletes every registered temporary file and folder (best effort), just before the process
/// exits. Waits for a set of files being renamed into place to be complete, and keeps any
/// other from starting.
fn remove_temporaries() {
    std::mem::forget(critical_section());
    // The registry stays locked: no temporary is created (or released) after this.
    let mut registry = lock();
    let paths: Vec<PathBuf> = registry.drain(..).collect();
    remove_paths(&paths);
    std::mem::forget(registry);
}

/// Removes the folders in `dir` whose names start with `prefix` (the hidden folders a killed
/// writer left, say); on failure, the folder that could not be removed.
pub(crate) fn remove_folders_named(
    dir: &Path,
    prefix: &str,
) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_dir_all(entry.path()).map_err(|e| (entry.path(), e))?;
        }
    }
    Ok(())
}

fn remove_paths(paths: &[PathBuf]) {
    for path in paths {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registered while the guard lives. (`remove_temporaries` itself ends the process's
    /// writes for good, so the tests call its parts; `tests/hostile.rs` signals the binary.)
    #[test]
    fn paths_are_registered_while_guarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let (_, guard) = create_registered(|| Ok(path.clone()), |p| p.as_path()).unwrap();
        assert!(lock().contains(&path));
        drop(guard);
        assert!(!lock().contains(&path));
    }

    #[test]
    fn files_and_whole_folders_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (file, folder) = (dir.path().join("file"), dir.path().join("folder"));
        std::fs::write(&file, b"x").unwrap();
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inner"), b"x").unwrap();
        remove_paths(&[file.clone(), folder.clone(), dir.path().join("absent")]);
        assert!(!file.exists() && !folder.exists());
    }
}
