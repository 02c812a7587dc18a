//! Standard output that fails cleanly: a reader that goes away (`spectrum ... | head`) ends
//! the program quietly, and any other write error (a full disk) is an error message and exit
//! status 1, never a panic as `print!` gives.

use std::io::{ErrorKind, Write};
use std::path::Path;

use burn_spectrum::{Error, Result};

/// Writes `text` to standard output and flushes it. A closed pipe exits with status 0 at once:
/// nobody is left to read the rest.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::io(Path::new("standard output"), e)),
    }
}

/// [`print`] with a newline.
pub fn println(text: &str) -> Result<()> {
    print(&format!("{text}\n"))
}
