"""boto3's bedrock-runtime `converse` and `converse_stream` against ModelServer's
`/model/{modelId}/converse` and `/converse-stream`, changing only the endpoint: text with a system
prompt and inference settings, a stop sequence, a tool-use round trip whole and streamed (the
streamed input assembling to valid JSON), errors before the stream as botocore's modelled
exceptions, and exceptions inside the stream surfacing with their codes.

Usage: python test_boto3_converse.py BROKER_URL EMULATOR_URL API_KEY

BROKER_URL is a broker with API key API_KEY whose Bedrock is the emulator at EMULATOR_URL (its
admin API scripts faults). boto3 signs with SigV4 and refuses Bearer auth over plain http, so a
hook run after signing puts the key in `Authorization`. Exits 0 when every check holds; an
assertion error otherwise.
"""

import json

# First: importing common keeps botocore off the machine's AWS files.
from common import MODEL, boto3_client, command_line, no_retries, script

from botocore.exceptions import ClientError, EventStreamError

WEATHER_TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "The current weather of a city",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    }
                },
            }
        }
    ],
    "toolChoice": {"auto": {}},
}


def ask(text):
    """One user message with `text`, as Converse takes it."""
    return [{"role": "user", "content": [{"text": text}]}]


def text_of(message):
    return "".join(block.get("text", "") for block in message["content"])


def read_stream(response):
    """A converse_stream's events as (name, payload) pairs."""
    return [(name, payload) for event in response["stream"] for name, payload in event.items()]


def streamed_message(events):
    """The text, tool calls ({toolUseId, name, input text}) and stop reason of a stream."""
    text, calls, stop = "", {}, None
    for name, payload in events:
        if name == "contentBlockStart" and "toolUse" in payload["start"]:
            start = payload["start"]["toolUse"]
            calls[payload["contentBlockIndex"]] = {"toolUseId": start["toolUseId"], "name": start["name"], "input": ""}
        elif name == "contentBlockDelta":
            delta = payload["delta"]
            text += delta.get("text", "")
            if "toolUse" in delta:
                calls[payload["contentBlockIndex"]]["input"] += delta["toolUse"]["input"]
        elif name == "messageStop":
            stop = payload["stopReason"]
    return text, list(calls.values()), stop


def check_converse(client):
    """converse: text, system prompt, inference settings, usage, metrics, request id."""
    response = client.converse(
        modelId=MODEL,
        system=[{"text": "Be brief."}],
        messages=ask("Hello Converse"),
        inferenceConfig={"maxTokens": 100, "temperature": 0.5, "topP": 0.9},
    )
    text = text_of(response["output"]["message"])
    assert "Hello Converse" in text and "system prompt" in text, response
    assert response["output"]["message"]["role"] == "assistant", response
    assert response["stopReason"] == "end_turn", response
    usage = response["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0, usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"], usage
    assert response["metrics"]["latencyMs"] >= 0, response
    assert response["ResponseMetadata"]["RequestId"].startswith("req_"), response["ResponseMetadata"]

    # The emulator's reply starts "Emulated reply to 1 turn(s)".
    response = client.converse(
        modelId=MODEL, messages=ask("stop"), inferenceConfig={"stopSequences": ["turn"]}
    )
    assert response["stopReason"] == "stop_sequence", response
    assert text_of(response["output"]["message"]) == "Emulated reply to 1 ", response
    response = client.converse(modelId=MODEL, messages=ask("a longer question"), inferenceConfig={"maxTokens": 3})
    assert response["stopReason"] == "max_tokens", response


def check_converse_stream(client):
    """converse_stream: Converse's events in order, the text, usage and metrics."""
    events = read_stream(client.converse_stream(modelId=MODEL, messages=ask("Stream Converse")))
    names = [name for name, _ in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"], names
    assert events[0][1] == {"role": "assistant"}, events[0]
    text, calls, stop = streamed_message(events)
    assert "Stream Converse" in text and not calls and stop == "end_turn", (text, calls, stop)
    metadata = events[-1][1]
    assert metadata["usage"]["outputTokens"] > 1 and "latencyMs" in metadata["metrics"], metadata


def check_tool_round_trip(client, streamed):
    """The model calls get_weather; the result goes back as a toolResult; the reply quotes it."""
    messages = ask("What is the weather in Paris? use the get_weather tool")
    if streamed:
        events = read_stream(client.converse_stream(modelId=MODEL, messages=messages, toolConfig=WEATHER_TOOLS))
        text, calls, stop = streamed_message(events)
        assert stop == "tool_use" and len(calls) == 1, (text, calls, stop)
        call = calls[0]
        call_input = json.loads(call["input"])
        content = ([{"text": text}] if text else []) + [
            {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"], "input": call_input}}
        ]
        assistant = {"role": "assistant", "content": content}
    else:
        response = client.converse(modelId=MODEL, messages=messages, toolConfig=WEATHER_TOOLS)
        assert response["stopReason"] == "tool_use", response
        assistant = response["output"]["message"]
        call = next(block["toolUse"] for block in assistant["content"] if "toolUse" in block)
        call_input = call["input"]
    assert call["name"] == "get_weather" and call["toolUseId"], call
    assert isinstance(call_input.get("city"), str), call_input
    result = {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call["toolUseId"], "content": [{"text": "18 C and sunny"}]}}],
    }
    messages = messages + [assistant, result]
    if streamed:
        events = read_stream(client.converse_stream(modelId=MODEL, messages=messages, toolConfig=WEATHER_TOOLS))
        text, calls, stop = streamed_message(events)
    else:
        response = client.converse(modelId=MODEL, messages=messages, toolConfig=WEATHER_TOOLS)
        text, stop = text_of(response["output"]["message"]), response["stopReason"]
    assert stop == "end_turn" and "18 C and sunny" in text, (text, stop)


def expect(client, error_name, status, call):
    """`call` raises botocore's modelled `error_name` with HTTP `status`."""
    try:
        call()
    except ClientError as error:
        assert isinstance(error, getattr(client.exceptions, error_name)), (type(error), error)
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status, error.response
        assert error.response["Error"]["Message"], error.response
        return error
    raise AssertionError(f"no {error_name} raised")


def check_errors(url, emulator_url, key):
    """Errors before a stream, as botocore's modelled exceptions with Bedrock's statuses."""
    client = boto3_client(url, key)
    error = expect(
        client,
        "ValidationException",
        400,
        lambda: client.converse(modelId=MODEL, messages=ask("x"), inferenceConfig={"temperature": 1.5}),
    )
    assert "inferenceConfig.temperature" in error.response["Error"]["Message"], error.response
    script(emulator_url, ["ResourceNotFoundException"])
    expect(client, "ResourceNotFoundException", 404, lambda: client.converse(modelId=MODEL, messages=ask("x")))
    script(emulator_url, ["ModelErrorException"])
    expect(client, "InternalServerException", 500, lambda: client.converse(modelId=MODEL, messages=ask("x")))
    # Without the key, a SigV4 signature alone is refused.
    unsigned = boto3_client(url, None)
    expect(unsigned, "AccessDeniedException", 403, lambda: unsigned.converse(modelId=MODEL, messages=ask("x")))
    # Throttles past the retries (no retries asked), whole and before the stream.
    client.meta.events.register_first("before-send.bedrock-runtime.*", no_retries)
    script(emulator_url, ["ThrottlingException"])
    expect(client, "ThrottlingException", 429, lambda: client.converse(modelId=MODEL, messages=ask("x")))
    script(emulator_url, ["ThrottlingException"])
    expect(
        client, "ThrottlingException", 429, lambda: client.converse_stream(modelId=MODEL, messages=ask("x"))
    )
    client.meta.events.unregister("before-send.bedrock-runtime.*", no_retries)


def check_mid_stream_exceptions(client, emulator_url):
    """An exception after content surfaces as EventStreamError with ConverseStream's code."""
    for fault, code in (
        ("throttlingException@3", "throttlingException"),
        ("modelStreamErrorException@3", "modelStreamErrorException"),
        ("cut@4", "internalServerException"),
    ):
        script(emulator_url, [fault])
        response = client.converse_stream(modelId=MODEL, messages=ask("Break me"))
        events = []
        try:
            for event in response["stream"]:
                events.append(event)
        except EventStreamError as error:
            assert error.response["Error"]["Code"] == code, (fault, error.response)
            assert error.response["Error"]["Message"], error.response
        else:
            raise AssertionError(f"{fault}: the broken stream ended cleanly after {len(events)} events")
        assert any("contentBlockDelta" in event for event in events), (fault, events)
        assert not any("messageStop" in event for event in events), (fault, events)


def main():
    url, emulator_url, key = command_line(3)
    client = boto3_client(url, key)
    check_converse(client)
    check_converse_stream(client)
    check_tool_round_trip(client, streamed=False)
    check_tool_round_trip(client, streamed=True)
    check_errors(url, emulator_url, key)
    check_mid_stream_exceptions(client, emulator_url)
    print("boto3 Converse: converse, converse_stream, tool use, errors and stream exceptions checked")


if __name__ == "__main__":
    main()
