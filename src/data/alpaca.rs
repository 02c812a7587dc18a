//! Alpaca records (`instruction`, `input`, `output`) read from a JSON array.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// One instruction-following example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpacaRecord {
    /// The task.
    pub instruction: String,
    /// Extra context; empty when the task has none.
    pub input: String,
    /// The answer to learn.
    pub output: String,
}

/// The records of a file, and what was left out.
#[derive(Clone, Debug, Default)]
pub struct AlpacaData {
    /// The usable records, in file order.
    pub records: Vec<AlpacaRecord>,
    /// `(index in the file, reason)` of each entry that was not a usable record.
    pub skipped: Vec<(usize, String)>,
}

/// Reads an Alpaca JSON file: an array of objects with string fields `instruction`, `output`
/// and optionally `input`. Entries that are not such objects, or whose instruction or output is
/// empty, are skipped and reported in [`AlpacaData::skipped`], not an error; a file that is not
/// a JSON array is an error.
pub fn read_alpaca(path: &Path) -> Result<AlpacaData> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    alpaca_records(&text).map_err(|reason| Error::InvalidData {
        path: path.to_path_buf(),
        reason,
    })
}

/// [`read_alpaca`] on the text of a file; [`Error::Parse`] when it is not a JSON array.
pub fn parse_alpaca(text: &str) -> Result<AlpacaData> {
    alpaca_records(text).map_err(|reason| Error::Parse {
        format: "Alpaca JSON",
        reason,
    })
}

/// The records of the text, or the reason it is not Alpaca JSON.
fn alpaca_records(text: &str) -> std::result::Result<AlpacaData, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let entries = value
        .as_array()
        .ok_or("expected a JSON array of {instruction, input, output} objects")?;
    let mut data = AlpacaData::default();
    for (index, entry) in entries.iter().enumerate() {
        match record(entry) {
            Ok(record) => data.records.push(record),
            Err(reason) => data.skipped.push((index, reason)),
        }
    }
    Ok(data)
}

fn record(entry: &Value) -> std::result::Result<AlpacaRecord, String> {
    let object = entry.as_object().ok_or("not an object")?;
    let field = |name: &str, required: bool| match object.get(name) {
        Some(Value::String(s)) if required && s.trim().is_empty() => Err(format!("empty `{name}`")),
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if !required => Ok(String::new()),
        None | Some(Value::Null) => Err(format!("no `{name}`")),
        Some(_) => Err(format!("`{name}` is not a string")),
    };
    Ok(AlpacaRecord {
        instruction: field("instruction", true)?,
        input: field("input", false)?,
        output: field("output", true)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_entries_are_counted_not_fatal() {
        let text = r#"[
            {"instruction": "Add", "input": "1 2", "output": "3"},
            {"instruction": "Greet", "output": "Hi"},
            {"instruction": "", "input": "", "output": "x"},
            {"instruction": "No answer", "input": ""},
            {"instruction": 5, "output": "x"},
            "just a string"
        ]"#;
        let data = parse_alpaca(text).unwrap();
        assert_eq!(data.records.len(), 2);
        assert_eq!(data.records[1].input, "");
        let reasons: Vec<&str> = data.skipped.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "empty `instruction`",
                "no `output`",
                "`instruction` is not a string",
                "not an object"
            ]
        );
        assert_eq!(data.skipped[0].0, 2);
    }

    #[test]
    fn a_non_array_is_an_error() {
        assert!(parse_alpaca(r#"{"instruction": "x"}"#).is_err());
        assert!(parse_alpaca("not json").is_err());
    }
}
