//! Jinja chat templates, rendered as transformers renders them.

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};

use serde::Serialize;

use crate::error::{Error, Result};

/// One chat turn: `role` is `system`, `user` or `assistant`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl ChatMessage {
    /// A user turn.
    pub fn user(content: &str) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// The most work (minijinja's fuel: about one unit per instruction) a render may do.
const TEMPLATE_FUEL: u64 = 10_000_000;

/// Renders a chat template with the variables transformers passes: `messages`,
/// `add_generation_prompt`, `bos_token`, `eos_token`, and the `raise_exception` function.
pub(super) fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String> {
    let mut env = Environment::new();
    // A template is code from the model folder: its loops must end. Real chat templates use a
    // few thousand units of fuel per conversation.
    env.set_fuel(Some(TEMPLATE_FUEL));
    // transformers compiles templates with these two options; whitespace differs without them.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Templates call Python string methods (`.strip()`, `.startswith()`, ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        },
    );
    let failed = |e: JinjaError| Error::ChatTemplate(e.to_string());
    env.add_template("chat", template).map_err(failed)?;
    let rendered = env
        .get_template("chat")
        .map_err(failed)?
        .render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(failed)?;
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
        message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}\
        {{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let text = render(CHATML, &[ChatMessage::user("Hi")], true, None, None).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let template = "{{ raise_exception('only user turns') }}";
        let error = render(template, &[], false, None, None).unwrap_err();
        assert!(error.to_string().contains("only user turns"));
    }

    /// A template that would loop for ever (nested loops over large ranges) runs out of fuel
    /// and is an error, in bounded time.
    #[test]
    fn endless_templates_are_stopped() {
        let template = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in \
            range(100000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let error = render(template, &[], false, None, None).unwrap_err();
        assert!(error.to_string().contains("fuel"), "{error}");
    }
}
