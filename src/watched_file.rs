//! A file the operator may change while the gateway runs (a mounted Secret or
//! ConfigMap, which Kubernetes swaps in place): read at start-up, where a
//! missing or broken file stops the gateway, then re-read every interval.
//! A changed file that parses replaces the value at once; one that does not
//! is refused with one warning (not one per tick) and the last good value
//! stays in use.
//!
//! Parse errors must never quote the file: it may hold secrets.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

/// Parses a file's bytes; the error names the problem, never the content.
pub type Parse<T> = fn(&[u8], &Path) -> Result<T, String>;

/// Parses the bytes of files read together, in the order they were named.
type ParseAll<T> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync>;

pub struct WatchedFile<T> {
    /// What the file is, for logs: "client-token file", "policy file", ...
    what: &'static str,
    /// One file, or files that only make sense together (a certificate and
    /// its key): a change to any of them is taken or refused as a whole.
    paths: Vec<PathBuf>,
    parse: ParseAll<T>,
    current: RwLock<Arc<Version<T>>>,
    /// The last change that was refused, so that it is warned about once.
    refused: Mutex<Option<Refused>>,
}

struct Version<T> {
    raw: Vec<Vec<u8>>,
    value: Arc<T>,
}

#[derive(PartialEq)]
enum Refused {
    Unreadable(String),
    Broken(Vec<Vec<u8>>),
}

/// What one look at the file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The file changed but cannot be used; the last good value stays.
    /// `warned` is false when this same change was already warned about.
    Refused {
        warned: bool,
    },
}

impl<T: Send + Sync + 'static> WatchedFile<T> {
    /// Reads the file once; a missing or broken file is an error.
    pub fn load(what: &'static str, path: &Path, parse: Parse<T>) -> Result<Self, String> {
        let owned = path.to_owned();
        Self::load_together(what, vec![owned.clone()], move |raw| parse(&raw[0], &owned))
    }

    /// Reads files that belong together once; a missing or broken one is an
    /// error. `parse` gets their bytes in the order of `paths`.
    pub fn load_together(
        what: &'static str,
        paths: Vec<PathBuf>,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let raw = read_all(what, &paths)?;
        let value = parse(&raw)?;
        tracing::info!(path = %paths[0].display(), "{what} loaded");
        Ok(WatchedFile {
            what,
            paths,
            parse: Box::new(parse),
            current: RwLock::new(Arc::new(Version {
                raw,
                value: Arc::new(value),
            })),
            refused: Mutex::new(None),
        })
    }

    /// The value of the last good version of the file.
    pub fn get(&self) -> Arc<T> {
        self.current.read().expect("lock").value.clone()
    }

    /// Re-reads the file and takes it if it changed and parses.
    pub fn reload(&self) -> Reload {
        let what = self.what;
        let raw = match read_all(what, &self.paths) {
            Ok(raw) => raw,
            Err(error) => {
                let warned = self.refuse_again(Refused::Unreadable(error.clone()));
                if warned {
                    tracing::warn!(%error, "keeping the last good version of the {what}");
                }
                return Reload::Refused { warned };
            }
        };
        if self.current.read().expect("lock").raw == raw {
            *self.refused.lock().expect("lock") = None;
            return Reload::Unchanged;
        }
        match (self.parse)(&raw) {
            Ok(value) => {
                tracing::info!(path = %self.paths[0].display(), "{what} reloaded");
                *self.current.write().expect("lock") = Arc::new(Version {
                    raw,
                    value: Arc::new(value),
                });
                *self.refused.lock().expect("lock") = None;
                Reload::Reloaded
            }
            Err(problem) => {
                let warned = self.refuse_again(Refused::Broken(raw));
                if warned {
                    tracing::warn!(%problem, "refusing the changed {what}; keeping the last good version");
                }
                Reload::Refused { warned }
            }
        }
    }

    /// Records a refusal; true if it is new (and so worth a warning).
    fn refuse_again(&self, refused: Refused) -> bool {
        let mut last = self.refused.lock().expect("lock");
        if last.as_ref() == Some(&refused) {
            return false;
        }
        *last = Some(refused);
        true
    }

    /// Re-reads the file every `interval` for as long as it is in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        every(self, interval, |file| async move {
            // File reads block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || file.reload()).await;
        });
    }
}

fn read_all(what: &str, paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        })
        .collect()
}

/// Runs `tick` every `interval` (the first time one interval from now) for as
/// long as `target` is in use elsewhere: the task holds only a weak
/// reference, so dropping the last owner ends it.
pub fn every<T, F, Fut>(target: &Arc<T>, interval: Duration, tick: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(target) = weak.upgrade() else { return };
            tick(target).await;
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A throwaway directory, removed on drop (no extra crate for tests).
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "cpgw-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        /// Writes `content` to `name` in the directory.
        pub fn file(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn number(raw: &[u8], _: &Path) -> Result<u32, String> {
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "not a number".to_owned())
    }

    #[test]
    fn files_read_together_change_together() {
        let dir = TempDir::new();
        let (a, b) = (dir.file("a", "1"), dir.file("b", "2"));
        let sum = |raw: &[Vec<u8>]| -> Result<u32, String> {
            raw.iter()
                .map(|r| number(r, Path::new("")))
                .sum::<Result<u32, String>>()
        };
        let files = WatchedFile::load_together("numbers", vec![a.clone(), b.clone()], sum).unwrap();
        assert_eq!(*files.get(), 3);
        std::fs::write(&b, "5").unwrap();
        assert_eq!(files.reload(), Reload::Reloaded);
        assert_eq!(*files.get(), 6);
        std::fs::remove_file(&a).unwrap();
        assert_eq!(files.reload(), Reload::Refused { warned: true });
        assert_eq!(*files.get(), 6, "the last good pair stays");
    }

    #[test]
    fn a_broken_start_is_an_error_naming_the_file() {
        let dir = TempDir::new();
        let path = dir.file("n", "x");
        let error = WatchedFile::load("number file", &path, number)
            .err()
            .unwrap();
        assert_eq!(error, "not a number");
        let missing = dir.0.join("missing");
        let error = WatchedFile::load("number file", &missing, number)
            .err()
            .unwrap();
        assert!(error.starts_with("cannot read the number file"), "{error}");
    }

    #[test]
    fn a_refused_change_is_warned_about_once_until_the_file_changes_again() {
        let dir = TempDir::new();
        let path = dir.file("n", "1");
        let file = WatchedFile::load("number file", &path, number).unwrap();
        assert_eq!(file.reload(), Reload::Unchanged);
        std::fs::write(&path, "2").unwrap();
        assert_eq!(file.reload(), Reload::Reloaded);
        assert_eq!(*file.get(), 2);
        std::fs::write(&path, "broken").unwrap();
        assert_eq!(file.reload(), Reload::Refused { warned: true });
        assert_eq!(file.reload(), Reload::Refused { warned: false });
        assert_eq!(*file.get(), 2, "the last good version stays");
        std::fs::write(&path, "broken again").unwrap();
        assert_eq!(file.reload(), Reload::Refused { warned: true });
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.reload(), Reload::Refused { warned: true });
        assert_eq!(file.reload(), Reload::Refused { warned: false });
        std::fs::write(&path, "3").unwrap();
        assert_eq!(file.reload(), Reload::Reloaded);
        // After a good version, the same broken content is news again.
        std::fs::write(&path, "broken").unwrap();
        assert_eq!(file.reload(), Reload::Refused { warned: true });
    }
}
