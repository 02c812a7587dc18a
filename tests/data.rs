//! Alpaca records to training batches, with a real byte-level BPE tokenizer (the tiny GGUF
//! fixture's, imported).

mod common;

use burn_spectrum::data::{
    AlpacaRecord, Batches, EncodeOptions, Encoded, alpaca_prompt, encode_record, parse_alpaca,
    prepare,
};
use burn_spectrum::model::gguf::{OutDtype, import_gguf};
use burn_spectrum::model::{IGNORE_INDEX, Tokenizer};

fn tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    import_gguf(
        &common::fixture("gguf/tiny_llama.gguf"),
        dir.path(),
        OutDtype::F32,
        |_, _| {},
    )
    .unwrap();
    let tokenizer = Tokenizer::from_dir(dir.path()).unwrap();
    (dir, tokenizer)
}

fn record(instruction: &str, input: &str, output: &str) -> AlpacaRecord {
    AlpacaRecord {
        instruction: instruction.into(),
        input: input.into(),
        output: output.into(),
    }
}

const EOS: u32 = 2;

#[test]
fn labels_cover_the_response_and_eos_only() {
    let (_dir, tokenizer) = tokenizer();
    let r = record("Say hi", "", "hi there");
    let Encoded::Whole(example) =
        encode_record(&tokenizer, &r, EOS, &EncodeOptions::default()).unwrap()
    else {
        panic!("fits in 512 tokens");
    };
    let prompt = tokenizer.encode(&alpaca_prompt(&r), true).unwrap();
    let response = tokenizer.encode("hi there", false).unwrap();
    assert_eq!(example.ids.len(), prompt.len() + response.len() + 1);
    assert_eq!(example.ids[..prompt.len()], prompt[..]);
    assert_eq!(*example.ids.last().unwrap(), EOS);
    assert!(
        example.labels[..prompt.len()]
            .iter()
            .all(|&l| l == IGNORE_INDEX)
    );
    let tail: Vec<i64> = example.ids[prompt.len()..]
        .iter()
        .map(|&id| id as i64)
        .collect();
    assert_eq!(example.labels[prompt.len()..], tail[..]);
    // The prompt and response tokenized apart decode to the whole text.
    let text = tokenizer
        .decode(&example.ids[..example.ids.len() - 1], false)
        .unwrap();
    assert_eq!(text, format!("{}hi there", alpaca_prompt(&r)));

    let options = EncodeOptions {
        train_on_prompt: true,
        ..Default::default()
    };
    let Encoded::Whole(all) = encode_record(&tokenizer, &r, EOS, &options).unwrap() else {
        panic!("fits");
    };
    assert!(all.labels.iter().all(|&l| l != IGNORE_INDEX));
}

#[test]
fn long_records_are_cut_or_dropped() {
    let (_dir, tokenizer) = tokenizer();
    let r = record("Say hi", "", &"word ".repeat(200));
    let prompt_len = tokenizer.encode(&alpaca_prompt(&r), true).unwrap().len();
    let options = |max_len| EncodeOptions {
        max_len,
        train_on_prompt: false,
    };
    match encode_record(&tokenizer, &r, EOS, &options(prompt_len + 3)).unwrap() {
        Encoded::Truncated(example) => {
            assert_eq!(example.ids.len(), prompt_len + 3);
            assert_eq!(example.labels.len(), prompt_len + 3);
        }
        other => panic!("expected a cut example, got {other:?}"),
    }
    assert_eq!(
        encode_record(&tokenizer, &r, EOS, &options(prompt_len)).unwrap(),
        Encoded::TooLong
    );
}

#[test]
fn prepare_splits_deterministically_and_reports() {
    let (_dir, tokenizer) = tokenizer();
    let mut text = String::from("[");
    for i in 0..20 {
        text.push_str(&format!(
            r#"{{"instruction": "Count to {i}", "input": "", "output": "{i}"}},"#
        ));
    }
    text.push_str(r#"{"instruction": "", "output": "x"}, {"instruction": "x"}]"#);
    let data = parse_alpaca(&text).unwrap();
    assert_eq!(data.skipped.len(), 2);
    let a = prepare(&data, &tokenizer, EOS, &EncodeOptions::default(), 4, 7).unwrap();
    let b = prepare(&data, &tokenizer, EOS, &EncodeOptions::default(), 4, 7).unwrap();
    let c = prepare(&data, &tokenizer, EOS, &EncodeOptions::default(), 4, 8).unwrap();
    assert_eq!((a.train.len(), a.eval.len()), (16, 4));
    assert_eq!(a.train, b.train);
    assert_ne!(a.train, c.train);
    assert!(a.eval.iter().all(|e| !a.train.contains(e)));

    let batch = Batches::new(&a.train, 4, 0, 1).unwrap().next().unwrap();
    assert_eq!(batch.ids.len(), 4);
    let seq = batch.ids[0].len();
    assert!(
        batch
            .ids
            .iter()
            .chain(&batch.attention_mask)
            .all(|row| row.len() == seq)
    );
    assert!(Batches::new(&a.train[..0], 4, 0, 1).is_err());
}
