"""boto3's bedrock-runtime client against the Bedrock emulator: InvokeModel's reply (text and
token usage) and a scripted ThrottlingException as botocore raises it.

Usage: python test_boto3_invoke.py EMULATOR_URL

Exits 0 when every check holds; an assertion error (with its traceback) otherwise. The client
makes exactly one attempt per call, so a throttle reaches the caller instead of being retried.
"""

import json
import math

# First: importing common keeps botocore off the machine's AWS files.
from common import MODEL, boto3_client, command_line, invoke_body, script

from botocore.exceptions import ClientError

PROMPT = "Hello from boto3"


def invoke(client):
    """One InvokeModel call with a one-message Anthropic body."""
    return client.invoke_model(
        modelId=MODEL,
        contentType="application/json",
        accept="application/json",
        body=invoke_body(PROMPT),
    )


def check_reply(client):
    """The reply's text echoes the prompt; its usage and token-count headers agree."""
    response = invoke(client)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, response["ResponseMetadata"]
    assert response["contentType"] == "application/json", response["contentType"]
    reply = json.loads(response["body"].read())

    text = reply["content"][0]["text"]
    expected = f'Emulated reply to 1 turn(s); last user message: "{PROMPT}"'
    assert text == expected, f"text: {text!r}"
    assert reply["role"] == "assistant" and reply["stop_reason"] == "end_turn", reply

    usage = reply["usage"]
    assert usage["input_tokens"] == math.ceil(len(PROMPT) / 4), usage
    assert usage["output_tokens"] == math.ceil(len(text) / 4), usage
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == str(usage["input_tokens"]), headers
    assert headers["x-amzn-bedrock-output-token-count"] == str(usage["output_tokens"]), headers


def check_throttle(client, url):
    """A scripted ThrottlingException surfaces as botocore's ClientError, after one attempt."""
    script(url, ["ThrottlingException"])
    try:
        invoke(client)
    except ClientError as error:
        assert isinstance(error, client.exceptions.ThrottlingException), type(error)
        assert error.response["Error"]["Code"] == "ThrottlingException", error.response
        assert (
            error.response["Error"]["Message"]
            == "Too many requests, please wait before trying again."
        ), error.response
        metadata = error.response["ResponseMetadata"]
        assert metadata["HTTPStatusCode"] == 429, metadata
        assert metadata["RetryAttempts"] == 0, metadata
    else:
        raise AssertionError("the scripted ThrottlingException was not raised")


def main():
    (url,) = command_line(1)
    client = boto3_client(url)
    check_reply(client)
    check_throttle(client, url)
    print("boto3 invoke_model: reply and ThrottlingException checked")


if __name__ == "__main__":
    main()
