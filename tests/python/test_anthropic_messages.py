"""The official `anthropic` SDK against ModelServer's `/v1/messages`: a plain reply, a stream read
with `text_stream` and `get_final_message`, a tool-use round trip whole and streamed, each error
status as the SDK's exception class, and a stream that fails mid-way raising rather than returning
a short text.

Usage: python test_anthropic_messages.py BROKER_URL EMULATOR_URL API_KEY OVERLOADED_BROKER_URL

BROKER_URL is a broker with API key API_KEY whose Bedrock is the emulator at EMULATOR_URL (its
admin API scripts faults) and whose body limit is below 300 KB; OVERLOADED_BROKER_URL is a broker
that refuses every request for load (queue capacity 0). Exits 0 when every check holds; an
assertion error (with its traceback) otherwise. The SDK's own retries are off, so each error
reaches the check as the broker answered it.
"""

import anthropic

from common import MODEL, ask, broken_text_stream_error, command_line, expect_status_error, script

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def check_create(client):
    """messages.create: the echoed text, usage, stop reason and the request id header."""
    message = client.messages.create(model=MODEL, max_tokens=100, messages=ask("Hello SDK"))
    assert message.type == "message" and message.role == "assistant", message
    assert "Hello SDK" in message.content[0].text, message
    assert message.stop_reason == "end_turn", message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    assert message._request_id and message._request_id.startswith("req_"), message._request_id


def check_stream(client):
    """messages.stream: text_stream gives the text in pieces; get_final_message the whole."""
    with client.messages.stream(model=MODEL, max_tokens=100, messages=ask("Stream to me")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, pieces
    text = "".join(pieces)
    assert "Stream to me" in text, text
    assert final.content[0].text == text, final
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens > 1, final.usage


def final_message(client, streamed, **kwargs):
    """The message `kwargs` asks for: streamed (`get_final_message`) or created whole."""
    if streamed:
        with client.messages.stream(**kwargs) as stream:
            return stream.get_final_message()
    return client.messages.create(**kwargs)


def check_tool_round_trip(client, streamed):
    """The model calls get_weather; its result goes back; the reply quotes it."""
    question = "What is the weather in Paris? use the get_weather tool"
    kwargs = dict(model=MODEL, max_tokens=200, tools=[WEATHER_TOOL], messages=ask(question))
    call_message = final_message(client, streamed, **kwargs)
    assert call_message.stop_reason == "tool_use", call_message
    call = next(block for block in call_message.content if block.type == "tool_use")
    assert call.name == "get_weather", call
    assert isinstance(call.input, dict) and isinstance(call.input.get("city"), str), call.input
    messages = ask(question) + [
        {"role": "assistant", "content": [block.model_dump() for block in call_message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"}],
        },
    ]
    kwargs["messages"] = messages
    answer = final_message(client, streamed, **kwargs)
    assert answer.stop_reason == "end_turn", answer
    assert "18 C and sunny" in answer.content[0].text, answer


def expect(error_class, status, call):
    """`call` raises exactly `error_class` with `status`, in Anthropic's error shape."""

    def check_body(body):
        assert body["type"] == "error", body

    return expect_status_error(anthropic.APIStatusError, error_class, status, call, check_body)


def check_errors(url, emulator_url, key, overloaded_url):
    """Every status the broker answers maps to the SDK's exception class for it."""
    client = anthropic.Anthropic(api_key=key, base_url=url, max_retries=0)
    create = lambda **extra: client.messages.create(  # noqa: E731
        model=MODEL, max_tokens=50, messages=ask("x"), **extra
    )
    error = expect(anthropic.BadRequestError, 400, lambda: create(extra_body={"temperature": 1.5}))
    assert "temperature" in error.body["error"]["message"], error.body
    wrong_key = anthropic.Anthropic(api_key="not-the-key", base_url=url, max_retries=0)
    expect(
        anthropic.AuthenticationError,
        401,
        lambda: wrong_key.messages.create(model=MODEL, max_tokens=5, messages=ask("x")),
    )
    script(emulator_url, ["AccessDeniedException"])
    expect(anthropic.PermissionDeniedError, 403, create)
    script(emulator_url, ["ResourceNotFoundException"])
    expect(anthropic.NotFoundError, 404, create)
    expect(
        anthropic.RequestTooLargeError,
        413,
        lambda: client.messages.create(model=MODEL, max_tokens=5, messages=ask("x" * 300_000)),
    )
    script(emulator_url, ["ModelErrorException"])
    expect(anthropic.InternalServerError, 500, create)
    script(emulator_url, ["hang"])
    error = expect(
        anthropic.GatewayTimeoutError,
        504,
        lambda: create(extra_headers={"x-modelserver-timeout": "0.3"}),
    )
    assert error.body["error"]["type"] == "timeout_error", error.body
    busy = anthropic.Anthropic(api_key="unused", base_url=overloaded_url, max_retries=0)
    error = expect(
        anthropic.OverloadedError,
        529,
        lambda: busy.messages.create(model=MODEL, max_tokens=5, messages=ask("x")),
    )
    assert error.body["error"]["type"] == "overloaded_error", error.body
    # Bedrock throttling and unavailability past the retries (last: throttles make the
    # broker pace the model).
    script(emulator_url, ["ThrottlingException"])
    error = expect(
        anthropic.RateLimitError,
        429,
        lambda: create(extra_headers={"x-modelserver-max-retries": "0"}),
    )
    assert 1 <= int(error.response.headers["retry-after"]) <= 60, error.response.headers
    script(emulator_url, ["ServiceUnavailableException"])
    expect(
        anthropic.ServiceUnavailableError,
        503,
        lambda: create(extra_headers={"x-modelserver-max-retries": "0"}),
    )
    # The same refusals before a stream's first event are the same exceptions.
    script(emulator_url, ["ThrottlingException"])
    expect(
        anthropic.RateLimitError,
        429,
        lambda: client.messages.stream(
            model=MODEL,
            max_tokens=5,
            messages=ask("x"),
            extra_headers={"x-modelserver-max-retries": "0"},
        ).__enter__(),
    )


def check_mid_stream_failure(client, emulator_url):
    """A stream that breaks after its first text raises; it never ends as a short answer."""
    script(emulator_url, ["throttlingException@3"])
    error = broken_text_stream_error(client, "Break me")
    assert error.body["error"]["type"] == "rate_limit_error", error.body
    # get_final_message raises too.
    script(emulator_url, ["modelStreamErrorException@4"])
    try:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=ask("Again")) as stream:
            stream.get_final_message()
    except anthropic.APIStatusError as error:
        assert error.body["error"]["type"] == "api_error", error.body
    else:
        raise AssertionError("get_final_message returned a broken stream's message")


def main():
    url, emulator_url, key, overloaded_url = command_line(4)
    client = anthropic.Anthropic(api_key=key, base_url=url, max_retries=0)
    check_create(client)
    check_stream(client)
    check_tool_round_trip(client, streamed=False)
    check_tool_round_trip(client, streamed=True)
    check_errors(url, emulator_url, key, overloaded_url)
    check_mid_stream_failure(client, emulator_url)
    print("anthropic SDK: create, stream, tool use, errors and mid-stream failures checked")


if __name__ == "__main__":
    main()
