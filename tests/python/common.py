"""What the Python test scripts share: the model they call, their command line, the emulator's
admin API (scripting faults), the Anthropic-shaped messages and bodies, boto3's bedrock-runtime
client with its after-signing key hook, and the check that a call raises an SDK's error.

Importing it keeps botocore off the machine's AWS files and Bedrock API key, so a script imports
it before boto3: every client setting is given here.
"""

import json
import os
import sys
import urllib.request

os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)

MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"


def command_line(count):
    """The script's first `count` arguments (URLs and keys), without a trailing `/`."""
    return [arg.rstrip("/") for arg in sys.argv[1 : count + 1]]


def post_json(url, body):
    """POSTs a JSON body (to the emulator's admin API) and returns its JSON answer."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def script(emulator_url, outcomes):
    """Queues forced outcomes for MODEL's next Bedrock calls."""
    queued = post_json(f"{emulator_url}/_emulator/script", {"model": MODEL, "outcomes": outcomes})
    assert queued["queued"] == len(outcomes), queued


def ask(text):
    """One user message with `text`, as the Anthropic and OpenAI APIs take it."""
    return [{"role": "user", "content": text}]


def invoke_body(text):
    """An InvokeModel body (Anthropic's, for Bedrock) asking `text`, as JSON text."""
    return json.dumps(
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": ask(text)}
    )


def boto3_client(url, key=None):
    """A bedrock-runtime client aimed at `url` with dummy static credentials, one attempt per
    call. With `key`, the key replaces the SigV4 signature in `Authorization` (a hook run after
    signing: boto3 refuses Bearer auth over plain http)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )
    if key is not None:

        def send_key(request, **_):
            request.headers["Authorization"] = f"Bearer {key}"

        client.meta.events.register("before-send.bedrock-runtime.*", send_key)
    return client


def no_retries(request, **_):
    """A botocore before-send hook asking the broker for no retries."""
    request.headers["x-modelserver-max-retries"] = "0"


def broken_text_stream_error(client, text):
    """Streams `text` with an `anthropic` client (`Anthropic`, `AnthropicBedrock`) whose stream
    the emulator breaks after its first text: reads `text_stream` until it raises, checks that
    it raised (the SDK's `APIStatusError`) rather than ending as a short answer, and that some
    text arrived first; returns the error."""
    import anthropic

    pieces = []
    try:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=ask(text)) as stream:
            for piece in stream.text_stream:
                pieces.append(piece)
    except anthropic.APIStatusError as error:
        assert pieces, "the text before the failure arrived"
        return error
    raise AssertionError(f"the broken stream returned {''.join(pieces)!r}")


def expect_status_error(base, error_class, status, call, check_body):
    """`call` raises exactly `error_class` (an HTTP error of an SDK whose errors derive from
    `base`: `anthropic.APIStatusError`, `openai.APIStatusError`) with `status`, a body that
    passes `check_body` and a request id; returns the error."""
    try:
        call()
    except base as error:
        assert type(error) is error_class, (type(error), error_class, error)
        assert error.status_code == status, (error.status_code, error)
        check_body(error.body)
        assert error.request_id, error
        return error
    raise AssertionError(f"no {error_class.__name__} raised")
