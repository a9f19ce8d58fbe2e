"""relay driven by the official OpenAI Python SDK, same protocol (gpt-test has an openai binding)."""

import json

import openai
import pytest
from openai import OpenAI

from conftest import TIMEOUT_S, WRONG_KEY

MODEL = "gpt-test"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def client(base_url, relay_key):
    with OpenAI(base_url=f"{base_url}/v1", api_key=relay_key, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def no_retry(base_url, relay_key):
    """For error tests: one attempt, so a retried 5xx/429 does not slow the run down."""
    with OpenAI(base_url=f"{base_url}/v1", api_key=relay_key, timeout=TIMEOUT_S, max_retries=0) as c:
        yield c


def user(text):
    return [{"role": "user", "content": text}]


# --- chat, non-streaming ---------------------------------------------------------------------


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model=MODEL, messages=user("hello"))
    assert r.object == "chat.completion"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello"
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 12
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == 17


def test_chat_alias_resolves(client):
    r = client.chat.completions.create(model="gpt-latest", messages=user("via alias"))
    assert r.choices[0].message.content == "echo: via alias"


def test_chat_with_raw_response_headers(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user("raw"))
    assert raw.http_response.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content == "echo: raw"


# --- chat, streaming -------------------------------------------------------------------------


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("hello there"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    # With include_usage the last chunk carries usage (and no choices); no earlier chunk does.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 12
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == 17
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_streaming_without_usage(client):
    stream = client.chat.completions.create(model=MODEL, messages=user("hello there"), stream=True)
    chunks = list(stream)
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]


def test_chat_streaming_helper(client):
    """`client.chat.completions.stream(...)` (the SDK's accumulating helper)."""
    with client.chat.completions.stream(model=MODEL, messages=user("helper")) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == "echo: helper"
    assert final.choices[0].message.content == "echo: helper"
    assert final.choices[0].finish_reason == "stop"


# --- tool calls ------------------------------------------------------------------------------


def test_tool_call_non_streaming(client):
    r = client.chat.completions.create(
        model=MODEL, messages=user("weather in Paris?"), tools=[WEATHER_TOOL]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris"}'
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_call_streaming(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=user("weather in Paris?"), tools=[WEATHER_TOOL], stream=True
    )
    name, call_id, args, finish = None, None, "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            assert tc.index == 0
            if tc.id:
                call_id = tc.id
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
        if choice.finish_reason:
            finish = choice.finish_reason
    assert call_id
    assert name == "get_weather"
    assert args == '{"city":"Paris"}'
    assert finish == "tool_calls"


def test_tool_result_round_trip(client):
    messages = user("weather in Paris?")
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages = messages + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "tool said: sunny, 21C"
    assert second.choices[0].finish_reason == "stop"


# --- embeddings and models -------------------------------------------------------------------


def test_embeddings_float(client):
    r = client.embeddings.create(model="embed-test", input=["a", "b"], encoding_format="float")
    assert r.object == "list"
    assert [d.index for d in r.data] == [0, 1]
    for d in r.data:
        assert d.embedding == pytest.approx([0.1, 0.2, 0.3])
    assert r.usage.prompt_tokens == 3
    assert r.usage.total_tokens == 3


def test_embeddings_default_encoding(client):
    # Without encoding_format the SDK asks for base64 and decodes it; a float answer is accepted as is.
    r = client.embeddings.create(model="embed-test", input="hello")
    assert len(r.data) == 1
    assert r.data[0].embedding == pytest.approx([0.1, 0.2, 0.3], rel=1e-6)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-test" in ids
    assert "claude-test" in ids
    assert "embed-test" in ids


# --- errors ----------------------------------------------------------------------------------


def test_wrong_key_is_authentication_error(base_url):
    c = OpenAI(base_url=f"{base_url}/v1", api_key=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model=MODEL, messages=user("hello"))
    assert e.value.status_code == 401
    assert e.value.message


def test_wrong_key_on_streaming_request(base_url):
    c = OpenAI(base_url=f"{base_url}/v1", api_key=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model=MODEL, messages=user("hello"), stream=True)


def test_wrong_key_on_models_list(base_url):
    c = OpenAI(base_url=f"{base_url}/v1", api_key=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()


def test_unknown_model_is_not_found(no_retry):
    with pytest.raises(openai.NotFoundError) as e:
        no_retry.chat.completions.create(model="nope", messages=user("hello"))
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert "nope" in e.value.message


def test_upstream_400_is_bad_request(no_retry):
    with pytest.raises(openai.BadRequestError) as e:
        no_retry.chat.completions.create(model=MODEL, messages=user("hi [[fault:400]]"))
    assert e.value.status_code == 400
    # The upstream's OpenAI error body is passed through to the SDK.
    assert e.value.code == "context_length_exceeded"


def test_upstream_500_is_internal_server_error(no_retry):
    with pytest.raises(openai.InternalServerError) as e:
        no_retry.chat.completions.create(model=MODEL, messages=user("hi [[fault:500]]"))
    assert e.value.status_code == 500


def test_upstream_500_on_streaming_request(no_retry):
    with pytest.raises(openai.InternalServerError) as e:
        no_retry.chat.completions.create(model=MODEL, messages=user("hi [[fault:500]]"), stream=True)
    assert e.value.status_code == 500


def test_upstream_error_mid_stream_raises(no_retry):
    # The upstream sends one chunk, then `data: {"error": ...}`; the SDK raises APIError on it.
    stream = no_retry.chat.completions.create(
        model=MODEL, messages=user("hi [[fault:stream-error]]"), stream=True
    )
    with pytest.raises(openai.APIError) as e:
        for _ in stream:
            pass
    assert "overloaded" in e.value.message


def test_upstream_429_on_the_only_key_is_no_healthy_keys(no_retry):
    # An upstream 429 is the host key's fault: relay trips its breaker and,
    # with no other key left, answers its own 503 carrying the upstream's hint.
    with pytest.raises(openai.InternalServerError) as e:
        no_retry.chat.completions.create(model=MODEL, messages=user("hi [[fault:429]]"))
    assert e.value.status_code == 503
    assert "no healthy keys in pool" in e.value.message
    assert e.value.response.headers.get("retry-after") in ("7", "8")
