//! SNR tables: the `snr_results_<slug>.json` and `..._sorted.json` files of spectrum.py.

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use super::naming::type_order_key;
use super::python_json::{float_repr, string};
use crate::error::{Error, Result};

/// One module's score.
#[derive(Clone, Debug, PartialEq)]
pub struct SnrEntry {
    /// Module name, e.g. `model.layers.3.mlp.down_proj`.
    pub name: String,
    /// Module type, e.g. `mlp.down_proj`.
    pub module_type: String,
    /// The score; `inf` and `NaN` are possible.
    pub snr: f64,
}

/// The scores of a model, in the order spectrum.py writes them: types in its type order, and
/// within a type, modules in layer order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnrTable {
    /// One entry per module, in scan order.
    pub entries: Vec<SnrEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TableValue {
    /// `"<module>": {"snr": <f>, "type": "<type>"}`
    Entry {
        snr: f64,
        #[serde(rename = "type")]
        module_type: String,
    },
    /// `"<type>": {"<module>": <f>, ...}`
    Sorted(IndexMap<String, f64>),
}

impl SnrTable {
    /// Builds a table from entries in scan order, grouping them by type in spectrum.py's order.
    pub fn from_scan_order(entries: Vec<SnrEntry>) -> Self {
        let mut entries = entries;
        // A stable sort keeps layer order within each type.
        entries.sort_by(|a, b| type_order_key(&a.module_type).cmp(&type_order_key(&b.module_type)));
        SnrTable { entries }
    }

    /// Reads either form of spectrum.py's JSON (plain or `_sorted`), with `Infinity`/`NaN`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse_table(&text).map_err(|reason| Error::InvalidSnrTable {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses either form of the JSON; [`Error::Parse`] says why the text is not an SNR table.
    pub fn parse(text: &str) -> Result<Self> {
        parse_table(text).map_err(|reason| Error::Parse {
            format: "an SNR table",
            reason,
        })
    }

    /// Module types in order of first appearance.
    pub fn types(&self) -> Vec<&str> {
        // A set, not a list search: a hostile table can have 100k types.
        let types: indexmap::IndexSet<&str> = self
            .entries
            .iter()
            .map(|e| e.module_type.as_str())
            .collect();
        types.into_iter().collect()
    }

    /// The entries of each type, in table order.
    pub fn by_type(&self) -> Vec<(&str, Vec<&SnrEntry>)> {
        let mut groups: IndexMap<&str, Vec<&SnrEntry>> = IndexMap::new();
        for entry in &self.entries {
            groups.entry(&entry.module_type).or_default().push(entry);
        }
        groups.into_iter().collect()
    }

    /// The entries of each type, highest SNR first (stable on ties, `NaN` last).
    pub fn sorted_by_type(&self) -> Vec<(&str, Vec<&SnrEntry>)> {
        let mut groups = self.by_type();
        for (_, entries) in &mut groups {
            entries.sort_by(|a, b| descending(a.snr, b.snr));
        }
        groups
    }

    /// `snr_results_<slug>.json`, byte for byte as `json.dump(..., indent=4)` writes it.
    pub fn to_json(&self) -> String {
        let items: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                format!(
                    "    {}: {{\n        \"snr\": {},\n        \"type\": {}\n    }}",
                    string(&e.name),
                    float_repr(e.snr),
                    string(&e.module_type)
                )
            })
            .collect();
        wrap_object(&items, "")
    }

    /// `snr_results_<slug>_sorted.json`: per type, modules by SNR descending.
    pub fn to_sorted_json(&self) -> String {
        let items: Vec<String> = self
            .sorted_by_type()
            .iter()
            .map(|(module_type, entries)| {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|e| format!("        {}: {}", string(&e.name), float_repr(e.snr)))
                    .collect();
                format!(
                    "    {}: {}",
                    string(module_type),
                    wrap_object(&inner, "    ")
                )
            })
            .collect();
        wrap_object(&items, "")
    }
}

/// The deepest nesting of objects and arrays read.
const MAX_NESTING: usize = 32;

/// How deep `[` and `{` nest in `text`, outside string literals (either quote, as JSON5 has).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// Either form of the JSON, or the reason the text is not an SNR table.
fn parse_table(text: &str) -> std::result::Result<SnrTable, String> {
    // The JSON5 parser recurses once per level: a deeply nested file would overflow the stack.
    let depth = nesting_depth(text);
    if depth > MAX_NESTING {
        return Err(format!(
            "nested {depth} levels deep; an SNR table nests 2 (at most {MAX_NESTING} are read)"
        ));
    }
    let map: IndexMap<String, TableValue> = json5::from_str(text).map_err(|e| {
            format!("expected {{\"<module>\": {{\"snr\": ..., \"type\": ...}}}} or {{\"<type>\": {{\"<module>\": <snr>}}}}: {e}")
        })?;
    if map.is_empty() {
        return Err("the table is empty".into());
    }
    let mut entries = Vec::new();
    let mut form = None;
    for (key, value) in map {
        let this_form = matches!(value, TableValue::Entry { .. });
        if *form.get_or_insert(this_form) != this_form {
            return Err(format!("`{key}` mixes the plain and the sorted form"));
        }
        match value {
            TableValue::Entry { snr, module_type } => entries.push(SnrEntry {
                name: key,
                module_type,
                snr,
            }),
            TableValue::Sorted(modules) => {
                entries.extend(modules.into_iter().map(|(name, snr)| SnrEntry {
                    name,
                    module_type: key.clone(),
                    snr,
                }))
            }
        }
    }
    Ok(SnrTable { entries })
}

fn wrap_object(items: &[String], indent: &str) -> String {
    if items.is_empty() {
        return "{}".into();
    }
    format!("{{\n{}\n{indent}}}", items.join(",\n"))
}

/// Descending order for scores: larger first, `NaN` after everything.
pub(crate) fn descending(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => b.partial_cmp(&a).expect("neither is NaN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class 3 of the hostile-input issue: a deeply nested file is refused by its depth, before
    /// the recursive parser sees it; brackets inside strings do not count.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = parse_table(&deep).unwrap_err();
        assert!(error.contains("100000 levels"), "{error}");
        assert_eq!(nesting_depth(r#"{"a[": {"b": "}}}{{"}}"#), 2);
        assert_eq!(nesting_depth(r#"{'x\'[': [1]}"#), 2);
    }
}
