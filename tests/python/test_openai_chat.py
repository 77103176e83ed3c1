"""The official `openai` SDK against ModelServer's `/v1/chat/completions` and `/v1/models`: create
with a system and a user message, stop and max_tokens; a stream with `include_usage` (read
chunk by chunk and through the SDK's `stream()` helper); a tool round trip whole and streamed,
the streamed arguments assembling to valid JSON; structured output (`parse` with a pydantic
model, `json_object`); each error status as the SDK's exception class;
a stream that fails mid-way raising `APIError`; `models.list()`.

Usage: python test_openai_chat.py BROKER_URL EMULATOR_URL API_KEY OVERLOADED_BROKER_URL

BROKER_URL is a broker with API key API_KEY whose Bedrock is the emulator at EMULATOR_URL (its
admin API scripts faults) and whose body limit is below 300 KB; OVERLOADED_BROKER_URL is a broker
that refuses every request for load (queue capacity 0). The SDK's base URL is BROKER_URL + "/v1".
Exits 0 when every check holds; an assertion error (with its traceback) otherwise. The SDK's own
retries are off, so each error reaches the check as the broker answered it.
"""

import json

import openai
import pydantic

from common import MODEL, ask, command_line, expect_status_error, script

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def check_create(client):
    """create: system + user, the text, finish reasons for stop and max_tokens, usage, ids."""
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "system", "content": "Be brief."}] + ask("Hello SDK"),
    )
    assert completion.object == "chat.completion" and completion.model == MODEL, completion
    assert completion.id.startswith("chatcmpl-"), completion.id
    assert completion._request_id and completion._request_id.startswith("req_"), completion
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice
    assert choice.message.role == "assistant", choice
    assert "Hello SDK" in choice.message.content and "system prompt" in choice.message.content, choice
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    assert usage.prompt_tokens_details.cached_tokens == 0, usage

    # The emulator's reply starts "Emulated reply to 1 turn(s)".
    stopped = client.chat.completions.create(model=MODEL, stop=["turn"], messages=ask("stop"))
    assert stopped.choices[0].finish_reason == "stop", stopped
    assert stopped.choices[0].message.content == "Emulated reply to 1 ", stopped
    for limit in (dict(max_tokens=3), dict(max_completion_tokens=3)):
        short = client.chat.completions.create(model=MODEL, messages=ask("a longer question"), **limit)
        assert short.choices[0].finish_reason == "length", short
        assert short.usage.completion_tokens == 3, short.usage


def check_stream(client):
    """stream=True with include_usage: role first, text in pieces, then a usage chunk."""
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("Stream to me"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert len({chunk.id for chunk in chunks}) == 1, chunks
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "Stream to me" in "".join(pieces), pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 1, last
    assert all(c.usage is None for c in chunks[:-1]), chunks

    # The SDK's stream helper assembles the same answer.
    with client.chat.completions.stream(model=MODEL, messages=ask("Helper stream")) as stream:
        texts = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(texts) == final.choices[0].message.content, (texts, final)
    assert "Helper stream" in final.choices[0].message.content, final


def streamed_call(client, **kwargs):
    """A streamed completion, read chunk by chunk: its text, its tool calls assembled by index
    (id, name, arguments) and its finish reason."""
    text, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model=MODEL, stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for part in choice.delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": None, "name": None, "arguments": ""})
            if part.id:
                assert call["id"] is None, "the id comes once"
                call["id"] = part.id
            if part.function and part.function.name:
                call["name"] = part.function.name
            if part.function and part.function.arguments:
                call["arguments"] += part.function.arguments
        finish = choice.finish_reason or finish
    return text, calls, finish


def check_tool_round_trip(client, streamed):
    """The model calls get_weather; its result goes back as a tool message; the reply quotes it."""
    question = "What is the weather in Paris? use the get_weather tool"
    messages = ask(question)
    if streamed:
        text, calls, finish = streamed_call(client, tools=[WEATHER_TOOL], messages=messages)
        assert finish == "tool_calls", (text, calls, finish)
        assert list(calls) == [0], calls
        call = calls[0]
        assert call["name"] == "get_weather" and call["id"], call
        arguments = json.loads(call["arguments"])
        assistant = {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
        call_id = call["id"]
    else:
        completion = client.chat.completions.create(
            model=MODEL, tools=[WEATHER_TOOL], tool_choice="required", messages=messages
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather", call
        arguments = json.loads(call.function.arguments)
        assistant = choice.message
        call_id = call.id
    assert isinstance(arguments.get("city"), str), arguments
    messages = messages + [assistant, {"role": "tool", "tool_call_id": call_id, "content": "18 C and sunny"}]
    if streamed:
        text, calls, finish = streamed_call(client, tools=[WEATHER_TOOL], messages=messages)
        assert finish == "stop" and not calls, (text, calls, finish)
    else:
        answer = client.chat.completions.create(model=MODEL, tools=[WEATHER_TOOL], messages=messages)
        assert answer.choices[0].finish_reason == "stop", answer
        text = answer.choices[0].message.content
    assert "18 C and sunny" in text, text

    if streamed:
        # The SDK's stream helper assembles the call too.
        with client.chat.completions.stream(
            model=MODEL, tools=[WEATHER_TOOL], messages=ask(question)
        ) as stream:
            final = stream.get_final_completion()
        call = final.choices[0].message.tool_calls[0]
        assert json.loads(call.function.arguments) == arguments, call


class Weather(pydantic.BaseModel):
    """A structured answer for `chat.completions.parse`."""

    city: str
    celsius: int


def check_structured_output(client):
    """response_format json_schema through the SDK's `parse` helper, and json_object."""
    completion = client.chat.completions.parse(
        model=MODEL, messages=ask("The weather in Paris"), response_format=Weather
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls, choice
    assert isinstance(choice.message.parsed, Weather), choice.message
    completion = client.chat.completions.create(
        model=MODEL, messages=ask("Any JSON object"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict), completion


def expect(error_class, status, call):
    """`call` raises exactly `error_class` with `status` and OpenAI's error body."""

    def check_body(body):
        assert set(body) >= {"message", "type", "param", "code"}, body

    return expect_status_error(openai.APIStatusError, error_class, status, call, check_body)


def check_errors(url, emulator_url, key, overloaded_url):
    """Every status the broker answers maps to the SDK's exception class for it."""
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
    create = lambda **extra: client.chat.completions.create(  # noqa: E731
        model=MODEL, max_tokens=50, messages=ask("x"), **extra
    )
    error = expect(openai.BadRequestError, 400, lambda: create(n=2))
    assert error.param == "n" and error.type == "invalid_request_error", error.body
    error = expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                }
            ],
        ),
    )
    assert "data: URL" in error.message, error.message
    wrong_key = openai.OpenAI(api_key="not-the-key", base_url=f"{url}/v1", max_retries=0)
    error = expect(
        openai.AuthenticationError,
        401,
        lambda: wrong_key.chat.completions.create(model=MODEL, messages=ask("x")),
    )
    assert error.code == "invalid_api_key", error.body
    script(emulator_url, ["AccessDeniedException"])
    expect(openai.PermissionDeniedError, 403, create)
    script(emulator_url, ["ResourceNotFoundException"])
    expect(openai.NotFoundError, 404, create)
    error = expect(
        openai.APIStatusError,
        413,
        lambda: client.chat.completions.create(model=MODEL, messages=ask("x" * 300_000)),
    )
    assert error.code == "request_too_large", error.body
    script(emulator_url, ["ModelErrorException"])
    expect(openai.InternalServerError, 500, create)
    script(emulator_url, ["ServiceUnavailableException"])
    error = expect(
        openai.InternalServerError,
        503,
        lambda: create(extra_headers={"x-modelserver-max-retries": "0"}),
    )
    assert error.code == "service_unavailable", error.body
    script(emulator_url, ["hang"])
    error = expect(
        openai.InternalServerError,
        504,
        lambda: create(extra_headers={"x-modelserver-timeout": "0.3"}),
    )
    assert error.code == "timeout", error.body
    busy = openai.OpenAI(api_key="unused", base_url=f"{overloaded_url}/v1", max_retries=0)
    error = expect(
        openai.RateLimitError,
        429,
        lambda: busy.chat.completions.create(model=MODEL, messages=ask("x")),
    )
    assert 1 <= int(error.response.headers["retry-after"]) <= 60, error.response.headers
    # Bedrock throttling past the retries (last: throttles make the broker pace the model),
    # whole and before a stream's first chunk.
    script(emulator_url, ["ThrottlingException"])
    error = expect(
        openai.RateLimitError,
        429,
        lambda: create(extra_headers={"x-modelserver-max-retries": "0"}),
    )
    assert error.code == "rate_limit_exceeded", error.body
    assert 1 <= int(error.response.headers["retry-after"]) <= 60, error.response.headers
    script(emulator_url, ["ThrottlingException"])
    expect(
        openai.RateLimitError,
        429,
        lambda: create(stream=True, extra_headers={"x-modelserver-max-retries": "0"}),
    )


def check_mid_stream_failure(client, emulator_url):
    """A stream that breaks after its first text raises APIError; never a short answer."""
    for fault, code in (("throttlingException@3", "rate_limit_exceeded"), ("modelStreamErrorException@3", None)):
        script(emulator_url, [fault])
        pieces = []
        try:
            for chunk in client.chat.completions.create(model=MODEL, messages=ask("Break me"), stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        except openai.APIError as error:
            assert not isinstance(error, openai.APIStatusError), type(error)
            assert error.code == code, (fault, error.body)
            assert error.message, error
        else:
            raise AssertionError(f"{fault}: the broken stream returned {''.join(pieces)!r}")
        assert pieces, f"{fault}: the text before the failure arrived"


def check_models(client):
    """models.list(): the model that served is listed, in OpenAI's shape."""
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert MODEL in ids, ids
    model = models[ids.index(MODEL)]
    assert model.object == "model" and model.owned_by and model.created > 0, model


def main():
    url, emulator_url, key, overloaded_url = command_line(4)
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
    check_create(client)
    check_stream(client)
    check_tool_round_trip(client, streamed=False)
    check_tool_round_trip(client, streamed=True)
    check_structured_output(client)
    check_models(client)
    check_errors(url, emulator_url, key, overloaded_url)
    check_mid_stream_failure(client, emulator_url)
    print("openai SDK: create, stream, tool calls, errors, mid-stream failures and models checked")


if __name__ == "__main__":
    main()
