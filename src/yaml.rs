//! Configuration files into typed settings, with errors that name the file
//! and the field. Shared by the kubelet config and the web config.
//!
//! Reading: only a regular file is read, and at most [`MAX_FILE_BYTES`] of
//! it, so `/dev/zero` is refused rather than read until memory runs out, and
//! a FIFO is refused rather than waited on forever. Parsing: the text goes to
//! a generic tree first, then through serde_path_to_error into the typed
//! struct.

use std::fs::OpenOptions;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use serde::de::DeserializeOwned;

/// The largest configuration file kubedf reads. A kubelet config is a few
/// KiB, a web config less; anything near this is not a config file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a configuration file: a regular file (symlinks followed) of at most
/// [`MAX_FILE_BYTES`], in UTF-8. A missing file keeps `ErrorKind::NotFound`
/// so callers can tell it from a bad one; other errors say what is wrong.
pub fn read_file(path: &Path) -> io::Result<String> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer. It changes nothing for a regular file. The type is checked on
    // the open descriptor, so the file cannot be swapped after the check.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a plain file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes, the most kubedf reads of a config file"),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // The size can change under us (a file being rewritten): read one byte
    // past the cap to notice, never more.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

#[derive(Debug, PartialEq, Eq)]
pub enum YamlError {
    /// Not YAML at all.
    Syntax(String),
    /// YAML, but not a mapping at the top level.
    NotAMapping,
    /// A field of the wrong type, or an unknown one where they are refused.
    Field { path: String, message: String },
}

/// Parses `text`; an empty document is `T::default()`.
pub fn from_str<T: DeserializeOwned + Default>(text: &str) -> Result<T, YamlError> {
    match tree(text)? {
        None => Ok(T::default()),
        Some(map) => from_tree(serde_json::Value::Object(map)),
    }
}

/// Parses `text` (YAML, or JSON, which is YAML) into a generic tree: `None`
/// for an empty document, else the top-level mapping.
pub fn tree(text: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>, YamlError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    match tree {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(map) => Ok(Some(map)),
        _ => Err(YamlError::NotAMapping),
    }
}

/// A tree (see [`tree`]) into the typed struct, errors naming the field.
pub fn from_tree<T: DeserializeOwned>(tree: serde_json::Value) -> Result<T, YamlError> {
    serde_path_to_error::deserialize(tree).map_err(|e| YamlError::Field {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `read_file` on a thread, so a read that hangs fails the test
    /// instead of hanging it.
    fn read_within(path: &Path) -> io::Result<String> {
        let (tx, rx) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read_file(&path));
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("read_file did not return within 20 s"))
    }

    #[test]
    fn reads_a_regular_file_and_keeps_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        assert_eq!(read_within(&file).unwrap(), "a: 1\n");
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_within(&link).unwrap(), "a: 1\n");
        let missing = read_within(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, want) in [
            (Path::new("/dev/zero"), "character device"),
            (fifo.as_path(), "FIFO"),
            (dir.path(), "directory"),
        ] {
            let err = read_within(path).unwrap_err().to_string();
            assert!(
                err.contains("not a regular file") && err.contains(want),
                "{path:?}: {err}"
            );
        }
    }

    #[test]
    fn refuses_a_file_over_the_cap_and_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = read_within(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let exact = dir.path().join("exact.yaml");
        std::fs::write(&exact, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert_eq!(read_within(&exact).unwrap().len(), MAX_FILE_BYTES as usize);
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"a: \xe9\n").unwrap();
        assert!(
            read_within(&latin1)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }
}
