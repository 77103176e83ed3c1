"""boto3's bedrock-runtime client against the Bedrock emulator: InvokeModel's reply (text and
token usage) and a scripted ThrottlingException as botocore raises it.

Usage: python test_boto3_invoke.py EMULATOR_URL

Exits 0 when every check holds; an assertion error (with its traceback) otherwise. The client
makes exactly one attempt per call, so a throttle reaches the caller instead of being retried.
"""

import json
import math
import os
import sys
import urllib.request

# Read no AWS files of the machine's user: this client's settings are all given below.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"
PROMPT = "Hello from boto3"


def bedrock_client(url):
    """A bedrock-runtime client aimed at the emulator, with dummy static credentials."""
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def post_json(url, body):
    """POST a JSON body to the emulator's admin API and return its JSON answer."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def invoke(client):
    """One InvokeModel call with a one-message Anthropic body."""
    return client.invoke_model(
        modelId=MODEL,
        contentType="application/json",
        accept="application/json",
        body=json.dumps(
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": PROMPT}],
            }
        ),
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
    queued = post_json(f"{url}/_emulator/script", {"model": MODEL, "outcomes": ["ThrottlingException"]})
    assert queued["queued"] == 1, queued
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
    url = sys.argv[1].rstrip("/")
    client = bedrock_client(url)
    check_reply(client)
    check_throttle(client, url)
    print("boto3 invoke_model: reply and ThrottlingException checked")


if __name__ == "__main__":
    main()
