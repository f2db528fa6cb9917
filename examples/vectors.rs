//! Generates the format v1 test vectors of `spec/vectors/`.
//!
//! ```text
//! cargo run --features forge --example vectors            # check the files, change nothing
//! cargo run --features forge --example vectors -- --write # rewrite spec/vectors/
//! ```
//!
//! The vectors themselves, and the expected result each one states, are in
//! `tests/vectors_gen/mod.rs`, which `tests/vectors.rs` includes too: the test
//! regenerates every file in memory and fails if one differs from disk. Run
//! with `--write` after a deliberate format change, and commit the result.
//!
//! Building invalid tokens needs `baton::forge`, hence `--features forge`.

#[cfg(feature = "forge")]
#[path = "../tests/vectors_gen/mod.rs"]
mod vectors_gen;

#[cfg(not(feature = "forge"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "the vector generator needs the forge feature: cargo run --features forge --example vectors"
    );
    std::process::ExitCode::FAILURE
}

#[cfg(feature = "forge")]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = match args.as_slice() {
        [] => false,
        [flag] if flag == "--write" => true,
        _ => {
            eprintln!("usage: vectors [--write]");
            return ExitCode::FAILURE;
        }
    };
    let dir = vectors_gen::vectors_dir();
    let files = vectors_gen::render(&vectors_gen::vectors());
    match if write {
        write_all(&dir, &files)
    } else {
        check_all(&dir, &files)
    } {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes every file and removes vector files the generator no longer makes,
/// so a renamed vector does not leave its old file behind.
#[cfg(feature = "forge")]
fn write_all(dir: &std::path::Path, files: &[(String, String)]) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") && !files.iter().any(|(f, _)| f == name) {
            std::fs::remove_file(&path)?;
            println!("removed {name}");
        }
    }
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents)?;
    }
    println!("wrote {} files to {}", files.len(), dir.display());
    Ok(true)
}

/// Compares the files on disk with the generated ones; reports each difference.
#[cfg(feature = "forge")]
fn check_all(dir: &std::path::Path, files: &[(String, String)]) -> std::io::Result<bool> {
    let mut ok = true;
    for (name, contents) in files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(on_disk) if &on_disk == contents => {}
            Ok(_) => {
                println!("differs: {name}");
                ok = false;
            }
            Err(_) => {
                println!("missing: {name}");
                ok = false;
            }
        }
    }
    if ok {
        println!("{} files up to date in {}", files.len(), dir.display());
    } else {
        println!("run with --write to regenerate");
    }
    Ok(ok)
}
