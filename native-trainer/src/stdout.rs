//! Printing results to standard output. A reader that goes away early
//! (`atop inspect FILE | head -1`) is not an error: the program stops
//! quietly with exit 0, as ripgrep does, instead of panicking in `println!`.

use std::io::Write;

use anyhow::Result;

/// Writes `text` and a newline to standard output.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Whether `error` comes from writing to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
