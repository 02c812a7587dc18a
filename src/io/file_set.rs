//! Writing a set of files into a folder so that a reader sees the whole old set or the whole
//! new one: never a mix, even when a write fails half-way or two runs write the same folder.
//!
//! Every file is first written into a hidden staging folder beside the destination (same file
//! system), and only when all are written are they renamed into place, one rename each. Runs
//! that write the same folder take turns: each holds an exclusive lock on the folder itself
//! from staging to the last rename. The staging folder is removed afterwards; SIGINT or SIGTERM
//! waits for a set being written, so it lands whole (see [`super::temporaries`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::temporaries::{create_registered, critical_section, remove_folders_named};

const STAGING_PREFIX: &str = ".spectrum-staging-";

/// Fills the file at the path it is given.
type Writer<'a> = Box<dyn FnOnce(&Path) -> std::io::Result<()> + 'a>;

/// Files to write together into one folder.
pub(crate) struct FileSet<'a> {
    dir: PathBuf,
    files: Vec<(String, Writer<'a>)>,
    stale: Vec<String>,
}

impl<'a> FileSet<'a> {
    /// An empty set for `dir` (created when written).
    pub(crate) fn new(dir: &Path) -> Self {
        FileSet {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            stale: Vec::new(),
        }
    }

    /// Adds the file `name`, filled by `write`.
    pub(crate) fn add(
        &mut self,
        name: &str,
        write: impl FnOnce(&Path) -> std::io::Result<()> + 'a,
    ) -> &mut Self {
        self.files.push((name.to_owned(), Box::new(write)));
        self
    }

    /// Adds the file `name` with these contents.
    pub(crate) fn add_bytes(&mut self, name: &str, bytes: impl AsRef<[u8]> + 'a) -> &mut Self {
        self.add(name, move |path| std::fs::write(path, bytes))
    }

    /// Deletes the file `name`, if the folder has it, once the new files are staged and before
    /// they are renamed in: a file that would shadow them (a stale sharded index) is gone
    /// before they appear.
    pub(crate) fn remove_stale(&mut self, name: &str) -> &mut Self {
        self.stale.push(name.to_owned());
        self
    }

    /// Writes every file, then renames them all into the folder. Returns their paths, in the
    /// order added; on error, the path it concerns and the I/O error, with the folder's
    /// previous files untouched.
    pub(crate) fn write(self) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
        let dir = self.dir;
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |e| (path, e)
        };
        std::fs::create_dir_all(&dir).map_err(at(&dir))?;
        let folder = File::open(&dir).map_err(at(&dir))?;
        folder.lock().map_err(at(&dir))?;
        // Staging folders that a killed writer left (SIGKILL cannot be handled): only a holder
        // of the lock stages, and we hold it, so none is in use. Best effort.
        let _ = remove_folders_named(&dir, STAGING_PREFIX);
        // The whole set, staging included: an interrupt waits for it (see `temporaries`).
        let _uninterrupted = critical_section();
        let (staging, _registered) = create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(STAGING_PREFIX)
                    .tempdir_in(&dir)
            },
            |staging| staging.path(),
        )
        .map_err(at(&dir))?;
        let mut names = Vec::with_capacity(self.files.len());
        for (name, write) in self.files {
            let staged = staging.path().join(&name);
            write(&staged).map_err(at(&staged))?;
            File::open(&staged)
                .and_then(|f| f.sync_all())
                .map_err(at(&staged))?;
            names.push(name);
        }
        for name in &self.stale {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err((path, e)),
                _ => {}
            }
        }
        let mut written = Vec::with_capacity(names.len());
        for name in names {
            let target = dir.join(&name);
            std::fs::rename(staging.path().join(&name), &target).map_err(at(&target))?;
            written.push(target);
        }
        // The renames are durable once the folder's entry list is.
        let _ = folder.sync_all();
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_every_file_and_leaves_no_staging_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("stale.json"), "old").unwrap();
        std::fs::create_dir(out.join(".spectrum-staging-killed")).unwrap();
        let mut set = FileSet::new(&out);
        set.add_bytes("a.json", "1")
            .add_bytes("b.yaml", "2")
            .remove_stale("stale.json")
            .remove_stale("never-there");
        let written = set.write().unwrap();
        assert_eq!(written, vec![out.join("a.json"), out.join("b.yaml")]);
        assert_eq!(names(&out), vec!["a.json", "b.yaml"]);
        assert_eq!(std::fs::read_to_string(out.join("b.yaml")).unwrap(), "2");
    }

    /// A write that fails half-way leaves the previous set whole, and nothing else.
    #[test]
    fn a_failed_write_keeps_the_old_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = FileSet::new(dir.path());
        old.add_bytes("a.json", "old a")
            .add_bytes("b.yaml", "old b");
        old.write().unwrap();
        let mut new = FileSet::new(dir.path());
        new.add_bytes("a.json", "new a")
            .add("b.yaml", |_| Err(std::io::Error::other("disk full")));
        new.remove_stale("a.json");
        let (path, error) = new.write().unwrap_err();
        assert!(path.ends_with("b.yaml") && error.to_string() == "disk full");
        assert_eq!(names(dir.path()), vec!["a.json", "b.yaml"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.json")).unwrap(),
            "old a"
        );
    }

    /// Two writers of one folder take turns: the folder holds one whole set.
    #[test]
    fn concurrent_writers_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = ["x", "y"]
            .into_iter()
            .map(|tag| {
                let out = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mut set = FileSet::new(&out);
                        set.add("1", move |p| {
                            std::fs::write(p, tag)?;
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            Ok(())
                        })
                        .add_bytes("2", tag);
                        set.write().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("1"), read("2"));
        assert_eq!(names(dir.path()), vec!["1", "2"]);
    }
}
