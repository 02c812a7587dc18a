//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `burn-spectrum`, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A path that does not exist.
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    /// The same tensor in two files of a checkpoint.
    #[error(
        "tensor `{name}` is in both {first} and {second}: without \
         model.safetensors.index.json every .safetensors file of the folder is read, so keep \
         one copy (or add the index)"
    )]
    DuplicateTensor {
        /// The tensor.
        name: String,
        /// The file read first.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// A folder given as weights holds no `.safetensors` file.
    #[error("{0}: no .safetensors file in this folder")]
    NoSafetensors(PathBuf),
    /// A file that is not valid safetensors (or does not fit what the caller needs).
    #[error("{path}: not a valid safetensors file ({reason})")]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A broken `model.safetensors.index.json`.
    #[error("{path}: invalid sharded checkpoint index ({reason})")]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor stored in a type other than a float we read.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; supported are F32, F16, BF16 and F64")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// Text that does not parse as the format named (no file involved).
    #[error("not {format}: {reason}")]
    Parse {
        /// What the text should have been, e.g. `an SNR table`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file that is not an SNR table in either of spectrum.py's JSON forms.
    #[error("{path}: not an SNR table ({reason})")]
    InvalidSnrTable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file that is not an unfrozen-parameters YAML.
    #[error("{path}: not an unfrozen-parameters YAML ({reason})")]
    InvalidSelection {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An unfrozen-parameter pattern that is not a regex axolotl could use.
    #[error("invalid unfrozen-parameter pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// A top percent above 100.
    #[error("top percent {0} is outside 0..=100")]
    InvalidPercent(u32),
    /// A scan that found no weight to score.
    #[error("nothing to scan: {0}")]
    NothingToScan(String),
    /// A `config.json` we cannot build a model from.
    #[error("{path}: invalid model config ({reason})")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Checkpoint tensors that do not fit the config: all of them, named.
    #[error("{path}: the weights do not fit the config{}", mismatch_details(.missing, .unexpected, .misshaped))]
    TensorMismatch {
        /// The model folder.
        path: PathBuf,
        /// Tensors the config calls for that the files lack.
        missing: Vec<String>,
        /// Tensors in the files that the config has no place for.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]` for tensors of the wrong shape.
        misshaped: Vec<String>,
    },
    /// A tokenizer that cannot be loaded or used.
    #[error("{path}: tokenizer error ({reason})")]
    Tokenizer {
        /// The tokenizer file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A chat template that does not compile or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A data file that is not usable training data.
    #[error("{path}: invalid data ({reason})")]
    InvalidData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Training produced a NaN or infinite loss.
    #[error("the loss is {loss} at step {step}: training stopped")]
    NonFiniteLoss {
        /// The step, from 0.
        step: usize,
        /// The loss.
        loss: f64,
    },
    /// A backward pass gave no gradient for some trainable parameters.
    #[error(
        "the backward pass gave gradients for {got} of {expected} trainable parameters: \
         burn-autodiff 0.21 can drop a graph's steps when a forward pass on the autodiff model \
         was left without a backward pass; compute losses that are not trained on with \
         `model.valid()`"
    )]
    LostGradients {
        /// Trainable parameters.
        expected: usize,
        /// Trainable parameters that got a gradient.
        got: usize,
    },
    /// A flag that needs a Cargo feature this build lacks.
    #[error("{flag} needs the `{feature}` feature, which this build lacks")]
    FeatureMissing {
        /// The flag.
        flag: &'static str,
        /// The Cargo feature.
        feature: &'static str,
    },
    /// A collective operation of a data-parallel run failed.
    #[error("data parallel: {what} failed: {reason}")]
    Collective {
        /// The operation.
        what: &'static str,
        /// burn-collective's error.
        reason: String,
    },
    /// A worker of a data-parallel run waited too long for the others.
    #[error(
        "data parallel: worker {rank} waited {seconds} s for the other workers in {what}: \
         another worker failed, died or is stuck"
    )]
    PeerTimeout {
        /// The operation.
        what: &'static str,
        /// The worker that waited.
        rank: usize,
        /// How long it waited.
        seconds: f64,
    },
    /// The orchestrator of a multi-node run could not be reached or started.
    #[error("the orchestrator at {address}: {reason}")]
    Orchestrator {
        /// `HOST:PORT`.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The port asked for the orchestrator is taken.
    #[error("port {port} is in use: choose another with --start-orchestrator")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// A flag given without another that it needs.
    #[error("{flag} needs {needs}")]
    FlagNeeds {
        /// The flag as given, e.g. `--num-nodes 2`.
        flag: String,
        /// What else to give.
        needs: &'static str,
    },
    /// The workers of a multi-node run differ (nodes, devices, model, method or settings),
    /// or did not all join in time.
    #[error("the multi-node run cannot start: {0}")]
    NodesDisagree(String),
    /// A worker of a data-parallel run panicked.
    #[error("data parallel: worker {rank} panicked")]
    WorkerPanicked {
        /// The worker.
        rank: usize,
    },
    /// Training produced gradients with a NaN or infinite norm.
    #[error("the gradient norm is {norm} at step {step}: training stopped")]
    NonFiniteGradient {
        /// The step, from 0.
        step: usize,
        /// The global gradient norm.
        norm: f64,
    },
    /// An evaluation task that is not in the requests folder.
    #[error("no task `{task}` in {root}; available: {available}")]
    UnknownTask {
        /// `task/variant`, as asked.
        task: String,
        /// The requests folder.
        root: PathBuf,
        /// The tasks that have this variant, comma-separated.
        available: String,
    },
    /// A setting outside the values that make sense.
    #[error("{name} {value} is out of range: {expected}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Generation asked to continue an empty prompt.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// A prompt and continuation longer than the model's context.
    #[error(
        "a prompt of {prompt} tokens plus {max_new_tokens} new ones exceeds the model's \
         context of {limit} positions (max_position_embeddings)"
    )]
    TooLong {
        /// Tokens in the prompt.
        prompt: usize,
        /// Tokens asked for.
        max_new_tokens: usize,
        /// The model's `max_position_embeddings`.
        limit: usize,
    },
    /// A token id the model's vocabulary does not have.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocabulary {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Saving as a plain checkpoint a model that has adapters or NF4 weights.
    #[error(
        "the model has LoRA adapters or NF4 weights: make it dense first (into_dense) or save \
         the adapters with save_adapter"
    )]
    NotDense,
    /// Saving adapters of a model that has none.
    #[error("the model has no LoRA adapters to save")]
    NoAdapters,
    /// Values or parts that NF4 cannot quantize or dequantize.
    #[error("NF4: {0}")]
    Nf4(#[from] Nf4Error),
    /// A weight that is not a whole number of NF4 blocks.
    #[error("NF4 needs whole blocks of {block} values; a [{rows}, {cols}] weight has {values}")]
    Nf4Blocks {
        /// Values per block.
        block: usize,
        /// Rows of the weight.
        rows: usize,
        /// Columns of the weight.
        cols: usize,
        /// Values given.
        values: usize,
    },
    /// An NF4 tensor with plain scales given where double-quantized ones are stored.
    #[error("an NF4 weight stores double-quantized scales; this tensor has plain ones")]
    Nf4NotDoubleQuantized,
    /// A method that leaves nothing to train in this model (e.g. a YAML that selects none of
    /// its parameters).
    #[error("{0}: nothing to train: the selection matches no parameter of this model")]
    NothingToTrain(String),
    /// A run whose estimated peak memory is more than the machine has available.
    #[error(
        "this run needs about {needed_mib} MiB at its peak (weights, gradients, optimizer state and activations, estimated from the model's config) but only {available_mib} MiB are available: use a method that trains fewer values (spectrum, lora, qlora), a smaller --batch-size or --seq-len, or --gradient-checkpointing"
    )]
    OutOfMemory {
        /// The estimated peak, in MiB.
        needed_mib: u64,
        /// What the system has available, in MiB.
        available_mib: u64,
    },
    /// A picture that could not be drawn or written.
    #[error("{path}: cannot draw the plot ({reason})")]
    Plot {
        /// The picture's file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A backend this build does not have.
    #[error("the {backend} backend is not compiled in: build with `--features {backend}`")]
    BackendMissing {
        /// Its Cargo feature.
        backend: &'static str,
    },
    /// A backend compiled in that finds no device to run on (no GPU adapter, no CUDA driver).
    #[error("the {backend} backend cannot run here: {reason}")]
    BackendUnusable {
        /// Its command-line name.
        backend: &'static str,
        /// What failed and what to do.
        reason: String,
    },
    /// `--dtype` naming a float type the backend's device cannot compute in (bf16 on most
    /// Vulkan drivers, f16 on an adapter without `shader-f16`).
    #[error(
        "--dtype {precision}: the {backend} backend's device cannot store and compute in \
         {precision}; use --dtype f32{alternative}"
    )]
    PrecisionUnsupported {
        /// The type asked for.
        precision: String,
        /// The backend's name.
        backend: String,
        /// Another half type that would run, as `" or --dtype f16"`, or empty.
        alternative: String,
    },
    /// An output folder that is a file.
    #[error("{0}: is a file, not a folder")]
    NotAFolder(PathBuf),
    /// A training step given no micro-batch.
    #[error("a step needs at least one micro-batch")]
    NoMicroBatches,
    /// The optimizer state could not be recorded.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// Token rows of different lengths where one `[batch, seq]` tensor is needed.
    #[error(
        "batch row {row} has {len} tokens where row 0 has {expected}: pad the rows to one length"
    )]
    RaggedBatch {
        /// The first row that differs.
        row: usize,
        /// Its length.
        len: usize,
        /// The length of row 0.
        expected: usize,
    },
    /// An attention mask that is not `[batch][seq]` of its ids.
    #[error("the attention mask has rows of lengths {rows:?}; ids are [{batch}, {seq}]")]
    MaskShape {
        /// Rows of ids.
        batch: usize,
        /// Length of the id rows.
        seq: usize,
        /// Lengths of the mask rows.
        rows: Vec<usize>,
    },
    /// Logits and labels that do not make a causal LM loss.
    #[error(
        "no causal LM loss for logits {logits:?} and labels {labels:?}: labels must be \
         [batch, seq] of the logits, with seq at least 2"
    )]
    LossShape {
        /// `[batch, seq, vocab]`
        logits: [usize; 3],
        /// `[batch, seq]`
        labels: [usize; 2],
    },
    /// Reading or importing a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// `; missing: a, b; unexpected: c` for the lists that are not empty.
fn mismatch_details(missing: &[String], unexpected: &[String], misshaped: &[String]) -> String {
    let mut text = String::new();
    for (label, names) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshaped),
    ] {
        // A config that claims thousands of layers must not print them all.
        const SHOWN: usize = 10;
        if !names.is_empty() {
            text.push_str(&format!(
                "; {label}: {}",
                names[..names.len().min(SHOWN)].join(", ")
            ));
            if names.len() > SHOWN {
                text.push_str(&format!(" and {} more", names.len() - SHOWN));
            }
        }
    }
    text
}

impl Error {
    /// An I/O error on `path`; a missing path becomes [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound(path.into());
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Everything that can go wrong while reading or importing a GGUF file. Each variant names the
/// file, and what is wrong in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading the GGUF file or writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{path}: not a GGUF file (first bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first bytes.
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("{path}: GGUF version {version} is not supported (only versions 2 and 3 are){hint}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// What to do about it.
        hint: &'static str,
    },
    /// The file ends before something it declares.
    #[error("{path}: truncated file: {what} needs bytes up to {needed}, but the file has {len}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
        /// The end of what is needed, in bytes.
        needed: u64,
        /// The file's length, in bytes.
        len: u64,
    },
    /// A count or size that cannot be right for a file of this length (checked before allocating).
    #[error("{path}: {what} is absurd: {reason}")]
    Absurd {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
        /// Why.
        reason: String,
    },
    /// A tensor whose ggml type this importer cannot dequantize.
    #[error(
        "{path}: tensor `{tensor}` has ggml type {type_name} (id {type_id}), which is not \
         supported; supported types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K"
    )]
    UnknownTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The ggml type id.
        type_id: u32,
        /// The ggml name of the type when the id is known (`Q5_K`), else `unknown`.
        type_name: &'static str,
    },
    /// A tensor whose info or data is inconsistent (bad dims, misaligned offset, wrong shape).
    #[error("{path}: tensor `{tensor}`: {reason}")]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// A model architecture other than `llama`.
    #[error("{path}: architecture `{arch}` is not supported (only `llama` is)")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// `general.architecture`
        arch: String,
    },
    /// A metadata key the import needs is absent.
    #[error("{path}: metadata key `{key}` is missing")]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },
    /// A metadata value has the wrong type or an impossible value.
    #[error("{path}: metadata key `{key}`: {reason}")]
    InvalidMetadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A feature the GGUF declares that the Hugging Face output cannot express (a tokenizer
    /// model or pre-tokenizer we do not rebuild, a RoPE scaling type, mixture of experts).
    #[error("{path}: {what} is not supported: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
        /// Why.
        reason: String,
    },
    /// The model the metadata describes is invalid, or does not fit the file's tensors.
    #[error("{path}: the model it describes cannot be imported: {reason}{}", mismatch_details(.missing, .unexpected, .misshaped))]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
        /// Tensors the metadata calls for that the file lacks (Hugging Face names).
        missing: Vec<String>,
        /// Tensors of the file the metadata has no place for.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]`.
        misshaped: Vec<String>,
    },
    /// The output folder holds files that would be read instead of the imported weights.
    #[error(
        "{path}: holds {} that a loader would read instead of (or beside) the imported \
         model.safetensors; remove them or import into another folder",
        .files.join(", ")
    )]
    ShadowingFiles {
        /// The output folder.
        path: PathBuf,
        /// The files in the way.
        files: Vec<String>,
    },
    /// Writing `model.safetensors` failed.
    #[error("{path}: cannot write safetensors: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl GgufError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with values or parts given to the NF4 quantizer (see `Error::Nf4`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nf4Error {
    /// `shape[0] * shape[1]` is not the number of values given.
    #[error("shape {shape:?} holds {expected} values, but {actual} were given")]
    ShapeMismatch {
        /// The shape asked for, `[out, in]`.
        shape: [usize; 2],
        /// `shape[0] * shape[1]`.
        expected: usize,
        /// The number of values given.
        actual: usize,
    },
    /// `shape[0] * shape[1]` overflows `usize`.
    #[error("shape {0:?} has more elements than usize can count")]
    ShapeOverflow([usize; 2]),
    /// A part of an NF4 tensor has the wrong length for its shape.
    #[error("NF4 tensor of shape {shape:?}: {what} has {actual} entries, expected {expected}")]
    Inconsistent {
        /// The tensor's shape.
        shape: [usize; 2],
        /// Which part: `"packed"`, `"absmax"`, `"double-quant codes"` or `"double-quant scales"`.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length found.
        actual: usize,
    },
}
