//! The file system rules every command follows: atomic writes, one run per
//! output directory (an advisory lock that names its holder), and no
//! temporary files left over from a killed run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use atop::artifact::Artifact;

/// Upper bounds on the files a command reads, so that a wrong path (a
/// device such as /dev/zero, a huge unrelated file) ends in an error that
/// names it instead of reading until the kernel kills the process.
pub mod read_limits {
    /// Artifacts and checkpoints (a WRN-28-10 artifact is about 150 MB).
    pub const MODEL_FILE: u64 = 4 << 30;
    /// Dataset files (CIFAR-10's archive is 170 MB, ImageNette's images less).
    pub const DATA_FILE: u64 = 4 << 30;
    /// Configurations, protocols, permalinks and adversarial images (text).
    pub const TEXT_FILE: u64 = 64 << 20;
    /// Reports, metrics logs and evaluation state (JSON written by atop).
    pub const RUN_RECORD: u64 = 1 << 30;
}

/// Reads at most `limit` bytes of `path`; a longer file (or an endless
/// device) is an error naming the file, what it was read as, and the limit.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file =
        File::open(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!(
            "{what} {} is larger than the limit of {} MiB (not a {what}, or an endless file)",
            path.display(),
            limit >> 20
        );
    }
    Ok(bytes)
}

/// Writes an artifact atomically.
pub fn write_artifact(path: &Path, artifact: &Artifact) -> Result<()> {
    write_atomic(path, &artifact.to_bytes()?)?;
    tracing::info!("wrote {}", path.display());
    Ok(())
}

/// Reads and verifies an artifact (bounded by its own header).
pub fn read_artifact(path: &Path) -> Result<Artifact> {
    let bytes = read_artifact_bytes(path)?;
    Ok(Artifact::from_bytes(&bytes, &path.display().to_string())?)
}

/// Reads an artifact file as far as its own header says it reaches (the
/// safetensors length prefix, the header, then the tensors' data), so an
/// endless or unrelated file is refused after a few bytes, and a declared
/// length over [`read_limits::MODEL_FILE`] before anything large is read.
pub fn read_artifact_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let cannot = || format!("cannot read artifact {name}");
    let mut file = File::open(path).with_context(cannot)?;
    let mut first = [0u8; 8];
    file.read_exact(&mut first)
        .with_context(|| format!("artifact {name} is shorter than 8 bytes: not an artifact"))?;
    let n = atop::artifact::header_length(first, &name)?;
    let mut bytes = first.to_vec();
    (&mut file)
        .take(n)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    let total = atop::artifact::declared_length(&bytes, &name)?;
    if total > read_limits::MODEL_FILE {
        bail!(
            "artifact {name} declares {} MiB, over the limit of {} MiB",
            total >> 20,
            read_limits::MODEL_FILE >> 20
        );
    }
    let rest = total - bytes.len() as u64;
    (&mut file)
        .take(rest)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if (bytes.len() as u64) < total {
        bail!(
            "artifact {name} is truncated: {} of {total} bytes",
            bytes.len()
        );
    }
    Ok(bytes)
}

/// [`read_bounded`] for UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).with_context(|| format!("{what} {} is not UTF-8 text", path.display()))
}

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

    #[test]
    fn reads_stop_at_their_limit_with_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("atop-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_bounded(&path, 100, "artifact").unwrap().len(), 100);
        let e = format!("{:#}", read_bounded(&path, 99, "artifact").unwrap_err());
        assert!(
            e.contains("artifact") && e.contains("f.bin") && e.contains("limit"),
            "{e}"
        );
        // An endless device ends at the limit too.
        let e = format!(
            "{:#}",
            read_bounded(Path::new("/dev/zero"), 1 << 20, "artifact").unwrap_err()
        );
        assert!(
            e.contains("/dev/zero") && e.contains("limit of 1 MiB"),
            "{e}"
        );
        std::fs::write(&path, [0xffu8, 0xfe]).unwrap();
        let e = format!("{:#}", read_text_bounded(&path, 10, "config").unwrap_err());
        assert!(e.contains("not UTF-8"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_artifact_is_read_as_far_as_its_header_says() {
        let e = format!(
            "{:#}",
            read_artifact_bytes(Path::new("/dev/zero")).unwrap_err()
        );
        assert!(
            e.contains("/dev/zero") && e.contains("header length is 0"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("atop-artifact-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A safetensors file with one 4-byte tensor and trailing junk.
        let header = br#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0, 128, 63]);
        let whole = bytes.len();
        bytes.extend_from_slice(&[9; 1000]);
        let path = dir.join("a.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_artifact_bytes(&path).unwrap().len(), whole);
        std::fs::write(&path, &bytes[..whole - 1]).unwrap();
        let e = format!("{:#}", read_artifact_bytes(&path).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
