//! The file system rules every command follows: atomic writes, one run per
//! output directory (an advisory lock that names its holder), and no
//! temporary files left over from a killed run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot write {} (nothing was replaced)", path.display()));
    }
    Ok(())
}

/// Whether `name` is a temporary file of [`write_atomic`]: `.NAME.PID.tmp`.
fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    inner.rsplit_once('.').is_some_and(|(base, pid)| {
        !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Removes the temporary files a killed write left in `dir`; returns how
/// many. Call it only while holding the directory's [`OutputLock`], so that
/// no live run's temporary file is taken.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if entry.path().is_file() && is_temp_name(&name.to_string_lossy()) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            tracing::info!(
                "removed {} (left by an interrupted write)",
                entry.path().display()
            );
            removed += 1;
        }
    }
    Ok(removed)
}

/// The lock file inside an output directory.
pub const LOCK_FILE: &str = ".atop.lock";

/// An advisory lock on an output directory, held until dropped (or until
/// the process ends, however it ends). The file names the holder.
pub struct OutputLock {
    _file: File,
}

impl OutputLock {
    /// Takes the lock on `dir` (created if missing), or refuses with a
    /// message that names the run holding it.
    pub fn acquire(dir: &Path, command_line: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "output directory {} is in use by another atop run ({}); wait for it to end or choose another --out",
                    dir.display(),
                    if holder.is_empty() {
                        "holder unknown"
                    } else {
                        holder
                    }
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let record = format!("pid {}: {command_line}\n", std::process::id());
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(record.as_bytes())?;
            file.sync_all()
        })()
        .with_context(|| format!("cannot write lock file {}", path.display()))?;
        remove_stale_temp_files(dir)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atop-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("a.bin");
        write_atomic(&path, b"old").unwrap();
        // Writing "into" a path whose parent is a file fails without touching anything.
        let bad = path.join("child.bin");
        assert!(write_atomic(&bad, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_lock_refuses_a_second_holder_and_cleans_leftovers() {
        let dir = temp_dir("lock");
        // What a kill -9 during write_atomic leaves, and files that only look alike.
        for name in [".pretrain.ckpt.4242.tmp", ".atop.safetensors.7.tmp"] {
            std::fs::write(dir.join(name), b"partial").unwrap();
        }
        for name in ["keep.tmp", ".x.tmp", ".a.b12.tmp", "metrics.jsonl"] {
            std::fs::write(dir.join(name), b"keep").unwrap();
        }
        let lock = OutputLock::acquire(&dir, "atop pretrain --out d").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".a.b12.tmp",
                ".atop.lock",
                ".x.tmp",
                "keep.tmp",
                "metrics.jsonl"
            ]
        );
        // flock locks belong to open file descriptions, so a second open in
        // this process is refused just as another process would be.
        let e = format!(
            "{:#}",
            OutputLock::acquire(&dir, "atop finetune").err().unwrap()
        );
        assert!(
            e.contains("in use by another atop run")
                && e.contains(&format!(
                    "pid {}: atop pretrain --out d",
                    std::process::id()
                )),
            "{e}"
        );
        drop(lock);
        OutputLock::acquire(&dir, "atop finetune").unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
