//! OpenAI Chat Completions (`POST /v1/chat/completions`) on the broker's one call path: the
//! request becomes an Anthropic Messages body for Bedrock, and the Anthropic reply, stream
//! events and broker errors come back in OpenAI's shapes, as the official `openai` SDKs read
//! them (`openai-python`: `types/chat/chat_completion*.py`, `lib/streaming/_deltas.py`,
//! `_streaming.py`).
//!
//! The module is split by concern, like [`super::anthropic`]:
//! - [`request`]: [`parse_chat_request`], the request body -> [`ChatRequest`] (the Anthropic
//!   body and what the reply mapping needs), or a [`super::FieldError`] naming the field;
//! - [`response`]: [`chat_completion`], an Anthropic reply -> a `chat.completion` object;
//! - [`stream`]: [`ChunkStream`], Anthropic stream events -> `data: {chat.completion.chunk}`
//!   SSE lines, ending with `data: [DONE]`;
//! - [`errors`]: [`error_response`], an [`super::ErrorClass`] -> status and `{"error":
//!   {message, type, param, code}}`; [`error_chunk`] for a failure after the stream started.
//!
//! # Request mapping
//!
//! | OpenAI | Anthropic body | notes |
//! |---|---|---|
//! | `model` | (route) | required; the route resolves it to a Bedrock model; echoed in replies |
//! | `messages[]` role `system` / `developer` | `system` text blocks | in order, wherever they appear; text parts only |
//! | role `user`, content string or parts | `user` turn | parts: `text`; `image_url` with a `data:` URL -> base64 `image` block (png, jpeg, gif, webp); `file` with `file_data` as a `data:application/pdf` URL -> `document` block |
//! | role `assistant` | `assistant` turn | text / `refusal` parts -> text; `tool_calls` -> `tool_use` blocks (id kept, `arguments` parsed to `input`; `""` reads as `{}`); `content: null` with `tool_calls` works; a message with neither is dropped |
//! | role `tool` | `tool_result` block in a `user` turn | `tool_use_id` = `tool_call_id`, which must name a call of the latest assistant message |
//! | consecutive same-role messages | one turn | alternation holds; a user turn's tool results come first |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens` | default 4000 (the seed's); 1..=1,000,000 |
//! | `temperature` | `temperature` | 0..=2 accepted; **above 1 clamped to 1** (Claude's range is 0..1); not set when absent (Claude's default, 1) |
//! | `top_p` | `top_p` | 0..=1; dropped when it is 1 and `temperature` is set (a no-op that newer Claude models refuse beside `temperature`) |
//! | `top_k` (extension) | `top_k` | passed through, non-negative integer |
//! | `stop` (string or list) | `stop_sequences` | empty or whitespace-only entries refused (Claude refuses them) |
//! | `tools[].function{name,description,parameters}` | `tools[]{name,description,input_schema}` | `parameters` absent -> `{"type":"object","properties":{}}`; `strict` ignored; only `type: function` |
//! | `tool_choice` | `tool_choice` | `auto` -> auto, `none` -> none, `required` -> any, `{function:{name}}` -> `{type: tool, name}` (a declared tool); `auto`/`none` without tools are dropped |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` | with tools only; `true` is the default |
//! | `user` | `metadata.user_id` | at most 256 characters |
//! | `response_format` `json_schema` | forced tool [`ANSWER_TOOL`] with `input_schema` = the schema | see below |
//! | `response_format` `json_object` | forced tool [`ANSWER_TOOL`] with `input_schema` `{"type":"object"}` | see below |
//! | `response_format` `text` | nothing | |
//! | `stream`, `stream_options.include_usage` | (route, [`ChunkStream`]) | never forwarded (Bedrock refuses extraneous keys) |
//! | `n` | | 1 or absent; more is refused (fan-out would multiply quota use) |
//! | `logprobs: true`, `top_logprobs` | | refused: Claude has no log probabilities |
//! | `modalities` | | `["text"]` accepted; anything else refused |
//! | `audio`, `functions`, `function_call`, `web_search_options` | | refused, naming the field |
//! | [`IGNORED_FIELDS`] | | accepted and ignored: they cannot be honoured but change nothing a client relies on |
//! | any other field | | refused with 400 naming it, as OpenAI itself does ("Unrecognized request argument") |
//!
//! Always set: `anthropic_version: "bedrock-2023-05-31"`; never set: `model`, `stream`.
//!
//! # JSON modes (`response_format`)
//! Both modes become one forced tool, [`ANSWER_TOOL`], whose input is the answer: Claude's
//! tool input is always a JSON object that follows the tool's schema, which is what a client
//! of JSON mode relies on, on every Claude model (a prefilled `{` is not accepted by newer
//! models and does not guarantee valid JSON). Without client tools the tool choice forces
//! `json_response`; with client tools it is `any` (the model either calls a client tool or
//! answers), or the client's own named tool. The reply's `json_response` call becomes
//! `message.content` (its input as compact JSON text) and is not listed in `tool_calls`;
//! `finish_reason` is `stop` when it was the only call. Text blocks in these modes are
//! dropped (a forced tool leaves none in practice) so that `content` parses as JSON. The
//! schema's root must be an object (as OpenAI's structured outputs require); `strict` is
//! ignored; a client tool may not be named `json_response`.
//!
//! # Reply mapping
//!
//! | Anthropic reply | OpenAI `chat.completion` |
//! |---|---|
//! | `text` blocks | `message.content`, joined; `null` when there is no text and there are tool calls |
//! | `tool_use` blocks | `message.tool_calls[]{id, type: function, function{name, arguments: JSON text}}` |
//! | `thinking`, `redacted_thinking`, server-tool blocks | dropped (no Chat Completions field carries them) |
//! | `stop_reason` `end_turn`, `stop_sequence` / `max_tokens`, `model_context_window_exceeded` / `tool_use` / `refusal` / other | `finish_reason` `stop` / `length` / `tool_calls` / `content_filter` / `stop` |
//! | `usage` | `prompt_tokens` = input + cache read + cache creation; `completion_tokens` = output; `total_tokens`; `prompt_tokens_details.cached_tokens` = cache read (`cache_write_tokens` = cache creation when non-zero) |
//! | | `id` and `created` from the route; `model` = the requested model; `choices` has one entry |
//!
//! # Streaming
//! `data: {chunk}\n\n` lines, all with the same `id`, `created` and `model`: first the role
//! (`delta: {role: "assistant", content: ""}`), then text as `delta.content` and tool calls
//! as `delta.tool_calls[{index, ...}]` where `index` counts tool calls only (0, 1, ...): the
//! first delta of a call carries `id`, `type: function`, `name` and `arguments: ""`, later
//! ones only argument fragments (openai-python's accumulator concatenates every string it
//! sees, so nothing else repeats); a call without arguments streams `"{}"` so the assembled
//! arguments parse. Then one chunk with an empty delta and the `finish_reason`, then, with
//! `stream_options.include_usage`, one chunk with `choices: []` and the `usage` (every other
//! chunk then carries `usage: null`), then `data: [DONE]`. An Anthropic `ping` becomes the
//! SSE comment `: ping` (keeps idle proxies from closing the connection; SSE clients skip
//! comments). Thinking is dropped. A failure after the stream started is one
//! `data: {"error": {...}}` line and no `[DONE]`, on which openai-python raises `APIError`.
//!
//! # Errors
//! [`error_response`]: 400 `invalid_request_error` (`param` names the field); 401
//! `invalid_request_error` / `invalid_api_key` (what OpenAI sends for a bad key); 403
//! `invalid_request_error` / `permission_denied`; 404 `invalid_request_error` /
//! `model_not_found`; 413 `invalid_request_error` / `request_too_large`; 429 `requests` /
//! `rate_limit_exceeded` for Bedrock throttles and for the broker's load refusals alike (the
//! SDK retries 429 and honours `Retry-After`); 500 `server_error`; 503 `server_error` /
//! `service_unavailable`; 504 `server_error` / `timeout`. The SDK picks its exception class
//! from the status alone.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;
#[cfg(test)]
mod test_support;

pub use errors::{error_chunk, error_response, field_error_response};
pub use request::{parse_chat_request, ChatRequest, ANSWER_TOOL, IGNORED_FIELDS};
pub use response::chat_completion;
pub use stream::{ChunkStream, PING_COMMENT};
