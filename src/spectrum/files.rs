//! Writing spectrum.py's set of files into a folder.

use std::path::{Path, PathBuf};

use super::selection::Selection;
use super::table::SnrTable;
use crate::error::{Error, Result};
use crate::io::FileSet;

/// Writes spectrum.py's files for `table` into `out_dir` (created if needed), named after
/// `stem` (`snr_results_<slug>`): with `tables`, `<stem>.json` and `<stem>_sorted.json`; and
/// for each of `percents`, `<stem>_unfrozenparameters_<pct>percent.yaml`.
///
/// Every file's contents are computed before the first is written, and the files are written
/// as one set (staged, then renamed in together): a failure leaves the folder's previous files as they
/// were, and two runs into one folder take turns. Returns the paths written, in that order.
pub fn write_spectrum_files(
    table: &SnrTable,
    out_dir: &Path,
    stem: &str,
    tables: bool,
    percents: &[u32],
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if tables {
        files.push((format!("{stem}.json"), table.to_json()));
        files.push((format!("{stem}_sorted.json"), table.to_sorted_json()));
    }
    for &pct in percents {
        let yaml = Selection::top_percent(table, pct)?.to_yaml();
        files.push((format!("{stem}_unfrozenparameters_{pct}percent.yaml"), yaml));
    }
    let mut set = FileSet::new(out_dir);
    for (name, contents) in files {
        set.add_bytes(&name, contents);
    }
    set.write().map_err(|(path, e)| Error::io(path, e))
}
