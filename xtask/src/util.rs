//! Small helpers shared by several tasks.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to a temporary name beside `path`, then renames it into
/// place, so that a reader never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().context("a file path")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("move {} into place", path.display()))
}
