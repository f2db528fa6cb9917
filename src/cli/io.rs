//! The CLI's I/O: tokens on stdin, secret key files, keyset files, stdout.
//!
//! Every read is bounded, so a wrong file or an endless pipe cannot make
//! the command allocate without limit.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use baton::limits::MAX_TOKEN_TEXT;
use baton::{HolderKey, Keyset, PublicKey, RootKey, UnverifiedToken};
use zeroize::Zeroizing;

use super::CliError;

/// A secret key file is one short line; anything much larger is not one.
const MAX_KEY_FILE: u64 = 1024;
/// A keyset file may list many keys with comments, but not without bound.
const MAX_KEYSET_FILE: u64 = 1024 * 1024;

/// Reads the token text on stdin, minus a single trailing newline (shell
/// pipelines and `echo` add one). Nothing else is trimmed: the library
/// reports any other whitespace as `base64_whitespace`, including the `\r`
/// a CRLF line end leaves (README, "CLI input").
pub fn read_token_text() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::StdinIsTerminal);
    }
    let mut buf = Vec::new();
    // One byte over the limit (plus the newline) is enough for the library
    // to report `too_large`; the rest of the stream is never read.
    stdin
        .lock()
        .take(MAX_TOKEN_TEXT as u64 + 2)
        .read_to_end(&mut buf)
        .map_err(CliError::ReadingStdin)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.is_empty() {
        return Err(CliError::EmptyStdin);
    }
    // A token is ASCII; lossy decoding keeps any other byte an error the
    // library names (bad prefix or invalid base64) instead of a new one.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads and parses the token on stdin, checking everything but signatures.
pub fn read_token() -> Result<UnverifiedToken, CliError> {
    UnverifiedToken::from_text(&read_token_text()?).map_err(CliError::ParsingToken)
}

/// Reads a secret key file's text: warns if others can read it, and caps
/// its size. The text is wiped on drop.
fn read_secret_text(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let reading = |source| CliError::ReadingKeyFile {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(reading)?;
    let meta = file.metadata().map_err(reading)?;
    if meta.mode() & 0o077 != 0 {
        // Not fatal (the key still works), but the secret may have leaked.
        let _ = writeln!(
            std::io::stderr(),
            "warning: key file {} is accessible by other users (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(reading)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(CliError::KeyFileTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// Reads a holder secret key file (`baton keygen --holder`).
pub fn read_holder_key(path: &Path) -> Result<HolderKey, CliError> {
    let text = read_secret_text(path)?;
    HolderKey::from_text(&text).map_err(|source| CliError::ParsingHolderKeyFile {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file whole, up to `limit` bytes (a request body for `prove` and
/// `verify`).
pub fn read_file_capped(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    let reading = |source| CliError::ReadingFile {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut out))
        .map_err(reading)?;
    if out.len() as u64 > limit {
        return Err(reading(std::io::Error::other(
            "file is larger than the limit",
        )));
    }
    Ok(out)
}

/// Reads a root secret key file (`baton keygen`).
pub fn read_root_key(path: &Path) -> Result<RootKey, CliError> {
    let text = read_secret_text(path)?;
    RootKey::from_text(&text).map_err(|source| CliError::ParsingKeyFile {
        path: path.to_owned(),
        source,
    })
}

/// Writes a secret key file readable by its owner only.
///
/// Without `force`, the file is created with `O_EXCL` and mode 0600, so an
/// existing file is never touched. With `force`, the key goes to a fresh
/// 0600 file in the same directory which is then renamed over the target:
/// writing into the existing file would keep its (possibly wider) mode,
/// and a crash midway would leave neither key.
pub fn write_secret_file(path: &Path, text: &str, force: bool) -> Result<(), CliError> {
    let writing = |source| CliError::WritingKeyFile {
        path: path.to_owned(),
        source,
    };
    if !force {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => CliError::KeyFileExists {
                    path: path.to_owned(),
                },
                _ => writing(e),
            })?;
        return fill(file, text).map_err(|e| {
            // A half-written key file is worse than none.
            let _ = std::fs::remove_file(path);
            writing(e)
        });
    }
    let temp = temp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(writing)?;
    fill(file, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            writing(e)
        })?;
    // Make the rename itself durable; a failure here loses nothing yet.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn fill(mut file: File, text: &str) -> std::io::Result<()> {
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A sibling of `path` for writing before the rename: same directory (so
/// the rename is atomic), hidden, and unique to this process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

/// Combines the `--key` values (parsed by clap) and the `--keyset` file
/// into one keyset.
pub fn read_keyset(keys: &[PublicKey], keyset_file: Option<&Path>) -> Result<Keyset, CliError> {
    let mut set = Keyset::new();
    for key in keys {
        set = set.with(*key);
    }
    if let Some(path) = keyset_file {
        let reading = |source| CliError::ReadingKeyset {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        File::open(path)
            .and_then(|f| f.take(MAX_KEYSET_FILE + 1).read_to_string(&mut text))
            .map_err(reading)?;
        if text.len() as u64 > MAX_KEYSET_FILE {
            return Err(reading(std::io::Error::other("file is larger than 1 MiB")));
        }
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_text(line).map_err(|source| CliError::ParsingKeyset {
                path: path.to_owned(),
                line: i + 1,
                source,
            })?;
            set = set.with(key);
        }
    }
    if set.iter().next().is_none() {
        return Err(CliError::NoKeys);
    }
    Ok(set)
}

/// Writes `text` to stdout. Errors (a closed pipe) are reported, not
/// panicked on as `println!` would.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::WritingOutput)
}

/// Writes a JSON document and a newline to stdout.
pub fn emit_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    // Serializing plain structs of strings and integers cannot fail; if it
    // ever did, it would surface as an output error, not a panic.
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::WritingOutput(std::io::Error::other(e)))?;
    emit(&format!("{text}\n"))
}
