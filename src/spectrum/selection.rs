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
    regex: Regex,
}

impl UnfrozenPattern {
    /// A pattern as axolotl reads it: every `.` not followed by `+` escaped, anchored at the start.
    pub fn new(raw: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidPattern {
            pattern: raw.to_owned(),
            reason,
        };
        if raw.ends_with(']') && raw.contains('[') && raw.contains(':') {
            return Err(invalid(
                "row ranges (`name[start:end]`) are not supported".into(),
            ));
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
            regex,
        })
    }

    /// The pattern as written in the YAML.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the parameter name matches, as Python's `re.match` would.
    pub fn matches(&self, param_name: &str) -> bool {
        self.regex.is_match(param_name)
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
            let names = entries[..keep].iter().map(|e| e.name.as_str());
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
                out.push_str(&format!("# {comment}\n"));
            }
            for pattern in patterns {
                out.push_str(&format!("- {}\n", pattern.as_str()));
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
