//! The Stanford Alpaca prompt template.

use super::alpaca::AlpacaRecord;

const WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input \
that provides further context. Write a response that appropriately completes the request.\n\n\
### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

const WITHOUT_INPUT: &str = "Below is an instruction that describes a task. Write a response \
that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// The prompt for a record: the template with input when the input is not blank, else the one
/// without. The response follows it directly.
pub fn alpaca_prompt(record: &AlpacaRecord) -> String {
    if record.input.trim().is_empty() {
        WITHOUT_INPUT.replace("{instruction}", &record.instruction)
    } else {
        WITH_INPUT
            .replace("{instruction}", &record.instruction)
            .replace("{input}", &record.input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(input: &str) -> AlpacaRecord {
        AlpacaRecord {
            instruction: "Name a colour.".into(),
            input: input.into(),
            output: "Blue".into(),
        }
    }

    #[test]
    fn both_templates() {
        assert_eq!(
            alpaca_prompt(&record("")),
            "Below is an instruction that describes a task. Write a response that appropriately \
             completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
        );
        let with = alpaca_prompt(&record("The sky"));
        assert!(with.contains("paired with an input"));
        assert!(with.ends_with("### Input:\nThe sky\n\n### Response:\n"));
    }
}
