"""Bedrock clients against ModelServer's Bedrock-native routes, changing only their endpoint:
Anthropic's `AnthropicBedrock` (messages.create, messages.stream, a stream that fails mid-way)
and boto3's bedrock-runtime client (invoke_model, invoke_model_with_response_stream, a throttle
before the stream, an exception frame inside it, and a SigV4-only call refused for lack of a key).

Usage: python test_bedrock_clients.py BROKER_URL EMULATOR_URL API_KEY

BROKER_URL is a broker with API key API_KEY whose Bedrock is the emulator at EMULATOR_URL (its
admin API scripts faults). AnthropicBedrock sends the key as `Authorization: Bearer`; boto3
signs with SigV4 and refuses Bearer auth over plain http, so a hook run after signing puts the
key in `Authorization`. Exits 0 when every check holds; an assertion error otherwise.
"""

import json

# First: importing common keeps botocore off the machine's AWS files.
from common import (
    MODEL,
    ask,
    boto3_client,
    broken_text_stream_error,
    command_line,
    invoke_body,
    no_retries,
    script,
)

import anthropic
from botocore.exceptions import ClientError, EventStreamError


def check_anthropic_bedrock(url, emulator_url, key):
    """AnthropicBedrock with the broker as its Bedrock: a reply, a stream, a broken stream."""
    client = anthropic.AnthropicBedrock(
        api_key=key, base_url=url, aws_region="us-east-1", max_retries=0
    )
    message = client.messages.create(model=MODEL, max_tokens=100, messages=ask("Hello Bedrock"))
    assert "Hello Bedrock" in message.content[0].text, message
    assert message.usage.output_tokens > 0, message.usage

    with client.messages.stream(model=MODEL, max_tokens=100, messages=ask("Stream Bedrock")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == final.content[0].text, (pieces, final)
    assert "Stream Bedrock" in final.content[0].text, final
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1, final

    script(emulator_url, ["throttlingException@3"])
    error = broken_text_stream_error(client, "Break")
    assert error.body["error"]["type"] == "throttlingException", error.body


def check_boto3(url, emulator_url, key):
    """invoke_model and invoke_model_with_response_stream, their errors and exception frames."""
    client = boto3_client(url, key)
    response = client.invoke_model(modelId=MODEL, contentType="application/json", body=invoke_body("Hi boto3"))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, response["ResponseMetadata"]
    reply = json.loads(response["body"].read())
    assert "Hi boto3" in reply["content"][0]["text"], reply
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == str(reply["usage"]["output_tokens"]), headers
    assert response["ResponseMetadata"]["RequestId"].startswith("req_"), response["ResponseMetadata"]

    response = client.invoke_model_with_response_stream(modelId=MODEL, body=invoke_body("Stream boto3"))
    events = [json.loads(part["chunk"]["bytes"]) for part in response["body"]]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop", events
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "Stream boto3" in text, text
    assert "amazon-bedrock-invocationMetrics" in events[-1], events[-1]

    # Throttles before the stream, past the request's retries: ThrottlingException, 429.
    script(emulator_url, ["ThrottlingException"])
    try:
        _throttled_stream(client)
    except ClientError as error:
        assert isinstance(error, client.exceptions.ThrottlingException), type(error)
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429, error.response
    else:
        raise AssertionError("no ThrottlingException")

    # An exception frame after content: EventStreamError with its code.
    script(emulator_url, ["modelStreamErrorException@3"])
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=invoke_body("Break boto3"))
    chunks = 0
    try:
        for _ in response["body"]:
            chunks += 1
    except EventStreamError as error:
        assert error.response["Error"]["Code"] == "modelStreamErrorException", error.response
    else:
        raise AssertionError(f"the broken stream ended cleanly after {chunks} chunks")
    assert chunks == 3, chunks

    # Without the key, a SigV4 signature alone is refused.
    unsigned = boto3_client(url, None)
    try:
        unsigned.invoke_model(modelId=MODEL, body=invoke_body("x"))
    except ClientError as error:
        assert isinstance(error, unsigned.exceptions.AccessDeniedException), type(error)
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403, error.response
    else:
        raise AssertionError("a call without the key was served")


def _throttled_stream(client):
    """Opens a stream whose calls are throttled, with no retry allowed by the broker."""
    client.meta.events.register_first(
        "before-send.bedrock-runtime.InvokeModelWithResponseStream", no_retries
    )
    try:
        return client.invoke_model_with_response_stream(modelId=MODEL, body=invoke_body("x"))
    finally:
        client.meta.events.unregister(
            "before-send.bedrock-runtime.InvokeModelWithResponseStream", no_retries
        )


def main():
    url, emulator_url, key = command_line(3)
    check_anthropic_bedrock(url, emulator_url, key)
    check_boto3(url, emulator_url, key)
    print("Bedrock clients: AnthropicBedrock and boto3 checked")


if __name__ == "__main__":
    main()
