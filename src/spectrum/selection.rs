//! Which parameters to train: spectrum.py's unfrozen-parameters YAML, matched as axolotl does.

use std::collections::HashSet;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};
use regex::Regex;

use super::table::SnrTable;
use crate::error::{Error, Result};

/// Patterns spectrum.py puts first in every YAML.
const ALWAYS_UNFROZEN: [&str; 2] = ["^lm_head.weight$", "^model.embed_tokens.weight$"];

/// One entry of `unfrozen_parameters`, matched the way axolotl does: every `.` not followed by
/// `+` is a literal dot, and the match is anchored at the start of the parameter name only
/// (`model.layers.1.mlp.down_proj` matches its `.weight` and `.bias`, not `model.layers.10...`).
#[derive(Clone, Debug)]
pub struct UnfrozenPattern {
    raw: String,
    matcher: Matcher,
}

/// A plain module name needs no regex (one would cost kilobytes each; a selection from a
/// table of 200k modules would hold gigabytes of them): it matches as a prefix.
#[derive(Clone, Debug)]
enum Matcher {
    Prefix,
    Regex(Regex),
}

/// Characters that make a pattern more than a literal name (`.` alone is escaped to a literal).
const REGEX_SYNTAX: &str = "\\^$*+?()[]{}|";

impl UnfrozenPattern {
    /// A pattern as axolotl reads it: every `.` not followed by `+` escaped, anchored at the start.
    pub fn new(raw: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidPattern {
            pattern: raw.to_owned(),
            reason,
        };
        // A line break in a name would write extra lines (extra patterns) into the YAML.
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(invalid(format!(
                "contains the control character {c:?}; parameter names have none"
            )));
        }
        if raw.ends_with(']') && raw.contains('[') && raw.contains(':') {
            return Err(invalid(
                "row ranges (`name[start:end]`) are not supported".into(),
            ));
        }
        if !raw.contains(|c: char| REGEX_SYNTAX.contains(c)) {
            return Ok(UnfrozenPattern {
                raw: raw.to_owned(),
                matcher: Matcher::Prefix,
            });
        }
        let mut escaped = String::with_capacity(raw.len() + 8);
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '.' && chars.peek() != Some(&'+') {
                escaped.push_str("\\.");
            } else {
                escaped.push(c);
            }
        }
        let regex = Regex::new(&format!("^(?:{escaped})")).map_err(|e| invalid(e.to_string()))?;
        Ok(UnfrozenPattern {
            raw: raw.to_owned(),
            matcher: Matcher::Regex(regex),
        })
    }

    /// The pattern as written in the YAML.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the parameter name matches, as Python's `re.match` would.
    pub fn matches(&self, param_name: &str) -> bool {
        match &self.matcher {
            Matcher::Prefix => param_name.starts_with(&self.raw),
            Matcher::Regex(regex) => regex.is_match(param_name),
        }
    }
}

/// A set of parameters to train, as a list of [`UnfrozenPattern`]s grouped under comments.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `(comment, patterns)`: the YAML writes `# <comment>` before each group that has one.
    groups: Vec<(Option<String>, Vec<UnfrozenPattern>)>,
}

impl Selection {
    /// spectrum.py's selection: per type, the first `floor(len * pct / 100)` modules by SNR
    /// descending (stable on ties, `NaN` last), after `lm_head` and `model.embed_tokens`.
    pub fn top_percent(table: &SnrTable, top_percent: u32) -> Result<Self> {
        if top_percent > 100 {
            return Err(Error::InvalidPercent(top_percent));
        }
        let mut groups = vec![(None, patterns(ALWAYS_UNFROZEN)?)];
        for (module_type, entries) in table.sorted_by_type() {
            let keep = entries.len() * top_percent as usize / 100;
            let names: Vec<String> = entries[..keep].iter().map(|e| literal(&e.name)).collect();
            let names = names.iter().map(String::as_str);
            groups.push((Some(format!("{module_type} layers")), patterns(names)?));
        }
        Ok(Selection { groups })
    }

    /// A selection from explicit patterns (regexes as axolotl reads them).
    pub fn from_patterns<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        Ok(Selection {
            groups: vec![(None, patterns(raw)?)],
        })
    }

    /// Reads `unfrozen_parameters` from a YAML file: spectrum.py's output or a whole axolotl
    /// config.
    pub fn read_yaml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let invalid = |reason: String| Error::InvalidSelection {
            path: path.to_owned(),
            reason,
        };
        // The loader recurses once per level: a deeply nested file would overflow the stack.
        if yaml_depth(&text).map_err(&invalid)? > MAX_YAML_DEPTH {
            return Err(invalid(format!(
                "nested more than {MAX_YAML_DEPTH} levels deep; an axolotl config nests a few"
            )));
        }
        let docs =
            yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let list = docs
            .first()
            .map(|doc| &doc["unfrozen_parameters"])
            .and_then(|v| v.as_vec())
            .ok_or_else(|| invalid("no `unfrozen_parameters:` list".into()))?;
        let raw: Vec<&str> = list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(format!("entry {v:?} is not a string")))
            })
            .collect::<Result<_>>()?;
        Self::from_patterns(raw)
    }

    /// The YAML spectrum.py writes (`unfrozen_parameters:` then one `- pattern` a line).
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("unfrozen_parameters:\n");
        for (comment, patterns) in &self.groups {
            if let Some(comment) = comment {
                let comment = comment.replace(|c: char| c.is_control(), " ");
                out.push_str(&format!("# {comment}\n"));
            }
            for pattern in patterns {
                out.push_str(&format!("- {}\n", yaml_scalar(pattern.as_str())));
            }
        }
        out
    }

    /// All patterns, in order.
    pub fn patterns(&self) -> impl Iterator<Item = &UnfrozenPattern> {
        self.groups.iter().flat_map(|(_, p)| p.iter())
    }

    /// Whether the parameter (an HF name, or a Burn parameter path) is to be trained.
    pub fn is_selected(&self, param_name: &str) -> bool {
        self.patterns().any(|p| p.matches(param_name))
    }

    /// The ids of the parameters of `module` that this selection trains, naming each float
    /// parameter by its path (`Vec` entries by index, fields by name).
    pub fn param_ids<B: Backend, M: Module<B>>(&self, module: &M) -> HashSet<ParamId> {
        let mut visitor = SelectedIds {
            selection: self,
            path: Vec::new(),
            ids: HashSet::new(),
        };
        module.visit(&mut visitor);
        visitor.ids
    }
}

/// The deepest YAML nesting read.
const MAX_YAML_DEPTH: usize = 64;

/// How deep sequences and mappings nest in `text` (stopping once past [`MAX_YAML_DEPTH`]),
/// pulled event by event: the parser's own loader recurses per level.
fn yaml_depth(text: &str) -> std::result::Result<usize, String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let (mut depth, mut deepest) = (0usize, 0usize);
    loop {
        let (event, _) = parser.next_token().map_err(|e| e.to_string())?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_YAML_DEPTH {
                    return Ok(deepest);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => return Ok(deepest),
            _ => {}
        }
    }
}

/// A module name as a pattern that matches it literally: regex syntax escaped (module names of
/// real models have none, so spectrum.py's output is unchanged; dots are literal already).
fn literal(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if REGEX_SYNTAX.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as a YAML scalar that reads back as itself: plain, as spectrum.py writes module
/// names, unless a character would change its meaning (a comment, a flow collection, a
/// mapping); then single-quoted, with `'` doubled.
fn yaml_scalar(text: &str) -> String {
    const INDICATORS: &str = "-?:,[]{}#&*!|>'\"%@`";
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| !INDICATORS.contains(c) && !c.is_whitespace())
        && !text.ends_with(|c: char| c.is_whitespace() || c == ':')
        && !text.contains(|c: char| "#[]{},".contains(c))
        && !text.contains(": ");
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

fn patterns<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<UnfrozenPattern>> {
    raw.into_iter().map(UnfrozenPattern::new).collect()
}

struct SelectedIds<'a> {
    selection: &'a Selection,
    path: Vec<String>,
    ids: HashSet<ParamId>,
}

impl<B: Backend> ModuleVisitor<B> for SelectedIds<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.selection.is_selected(&self.path.join(".")) {
            self.ids.insert(param.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class 7 of the hostile-input issue: a name with a line break is refused; names with
    /// YAML's special characters are quoted and read back as themselves; ordinary module names
    /// stay unquoted, as spectrum.py writes them.
    #[test]
    fn names_cannot_inject_into_the_yaml() {
        let newline = UnfrozenPattern::new("model.layers.0.mlp\n- .*");
        assert!(
            newline
                .unwrap_err()
                .to_string()
                .contains("control character")
        );
        let names = [
            "model.layers.0.mlp.down_proj",
            "a #comment",
            "list[0]",
            "key: value",
            "'quoted'",
            "-dash",
            "ends:",
            "a,b",
        ];
        let selection = Selection::from_patterns(names).unwrap();
        let yaml = selection.to_yaml();
        assert!(
            yaml.contains("\n- model.layers.0.mlp.down_proj\n"),
            "{yaml}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let back = Selection::read_yaml(&path).unwrap();
        let read: Vec<&str> = back.patterns().map(UnfrozenPattern::as_str).collect();
        assert_eq!(read, names, "{yaml}");
    }

    /// A literal name matches as the regex it stands for would: as a prefix, dots literal.
    #[test]
    fn literal_names_match_as_their_regex_would() {
        let literal = UnfrozenPattern::new("model.layers.1.mlp").unwrap();
        assert!(matches!(literal.matcher, Matcher::Prefix));
        assert!(literal.matches("model.layers.1.mlp.down_proj.weight"));
        assert!(!literal.matches("model.layers.10.mlp.down_proj.weight"));
        assert!(!literal.matches("modelXlayers.1.mlp.weight"));
        assert!(!literal.matches("x.model.layers.1.mlp.weight"));
        let regex = UnfrozenPattern::new("^lm_head.weight$").unwrap();
        assert!(regex.matches("lm_head.weight") && !regex.matches("lm_head.weights"));
        let plus = UnfrozenPattern::new("model.layers.+.mlp").unwrap();
        assert!(plus.matches("model.layers.12.mlp.up_proj.weight"));
    }

    /// A module type with a control character cannot write lines through its comment.
    #[test]
    fn comments_stay_on_one_line() {
        let selection = Selection {
            groups: vec![(Some("mlp\n- .*\n#".into()), Vec::new())],
        };
        assert_eq!(selection.to_yaml(), "unfrozen_parameters:\n# mlp - .* #\n");
    }
}
