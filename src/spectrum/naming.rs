//! Module names and module types, as spectrum.py derives them.

/// The module a parameter belongs to: its name without a trailing `.weight`.
pub(super) fn module_name(param_name: &str) -> &str {
    param_name.strip_suffix(".weight").unwrap_or(param_name)
}

/// The type of a module: its name with everything up to and including the first all-digit
/// component removed (`model.layers.3.mlp.down_proj` -> `mlp.down_proj`); a name without a
/// digit component is its own type (`model.embed_tokens`).
pub(super) fn module_type(module_name: &str) -> &str {
    let mut offset = 0;
    for part in module_name.split('.') {
        offset += part.len() + 1;
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            return module_name.get(offset..).unwrap_or("");
        }
    }
    module_name
}

/// Orders names as a model lists its layers: digit runs compare as numbers, so that
/// `layers.2` comes before `layers.10`.
pub(super) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let (dx, rx) = split_digits(x);
                let (dy, ry) = split_digits(y);
                let (tx, ty) = (trim_zeros(dx), trim_zeros(dy));
                let order = tx
                    .len()
                    .cmp(&ty.len())
                    .then(tx.cmp(ty))
                    .then(dx.len().cmp(&dy.len()));
                if order.is_ne() {
                    return order;
                }
                (x, y) = (rx, ry);
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b'0').unwrap_or(s.len());
    &s[start..]
}

/// spectrum.py's order of module types: grouped by their first component, groups sorted, and
/// each group sorted.
pub(super) fn type_order_key(module_type: &str) -> (&str, &str) {
    (module_type.split('.').next().unwrap_or(""), module_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_as_spectrum_py() {
        assert_eq!(module_type("model.layers.3.mlp.down_proj"), "mlp.down_proj");
        assert_eq!(module_type("model.embed_tokens"), "model.embed_tokens");
        assert_eq!(module_type("lm_head"), "lm_head");
        assert_eq!(
            module_type("model.layers.0.mlp.experts.12.up_proj"),
            "mlp.experts.12.up_proj"
        );
        assert_eq!(module_name("model.norm.weight"), "model.norm");
        assert_eq!(module_name("model.norm.bias"), "model.norm.bias");
    }

    #[test]
    fn natural_order_puts_layer_2_before_10() {
        let mut names = vec!["l.10.a", "l.2.a", "l.1.b", "l.1.a", "l.02.a"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["l.1.a", "l.1.b", "l.2.a", "l.02.a", "l.10.a"]);
    }
}
