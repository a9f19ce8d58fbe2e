"""relay driven by the official Anthropic Python SDK, same protocol (claude-test has an anthropic binding)."""

import anthropic
import pytest
from anthropic import Anthropic

from conftest import TIMEOUT_S, WRONG_KEY

MODEL = "claude-test"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client(base_url, relay_key):
    # The SDK posts to {base_url}/v1/messages with `x-api-key: <key>`.
    with Anthropic(base_url=base_url, api_key=relay_key, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def no_retry(base_url, relay_key):
    """For error tests: one attempt, so a retried 5xx/429 does not slow the run down."""
    with Anthropic(base_url=base_url, api_key=relay_key, timeout=TIMEOUT_S, max_retries=0) as c:
        yield c


def user(text):
    return [{"role": "user", "content": text}]


# --- messages, non-streaming -----------------------------------------------------------------


def test_message_non_streaming(client):
    m = client.messages.create(model=MODEL, max_tokens=64, messages=user("hello"))
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "echo: hello"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == 10
    assert m.usage.output_tokens == 5
    assert m.usage.cache_read_input_tokens == 2
    assert m.usage.cache_creation_input_tokens == 1


def test_message_with_auth_token_bearer(base_url, relay_key):
    # auth_token= sends `Authorization: Bearer <key>` instead of x-api-key.
    with Anthropic(base_url=base_url, auth_token=relay_key, timeout=TIMEOUT_S) as c:
        m = c.messages.create(model=MODEL, max_tokens=64, messages=user("bearer"))
    assert m.content[0].text == "echo: bearer"


def test_message_with_system_and_content_blocks(client):
    m = client.messages.create(
        model=MODEL,
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "blocks"}]}],
    )
    assert m.content[0].text == "echo: blocks"


def test_raw_response_headers(client):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=user("raw"))
    assert raw.http_response.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().content[0].text == "echo: raw"


# --- messages, streaming ---------------------------------------------------------------------


def test_message_stream_helper(client):
    with client.messages.stream(model=MODEL, max_tokens=64, messages=user("hello there")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there"
    assert final.content[0].type == "text"
    assert final.content[0].text == "echo: hello there"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == 10


def test_message_stream_raw_events(client):
    stream = client.messages.create(model=MODEL, max_tokens=64, messages=user("raw events"), stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert "content_block_start" in types
    assert "content_block_stop" in types
    assert "message_delta" in types
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "echo: raw events"
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 5


def test_message_stream_with_auth_token_bearer(base_url, relay_key):
    with Anthropic(base_url=base_url, auth_token=relay_key, timeout=TIMEOUT_S) as c:
        with c.messages.stream(model=MODEL, max_tokens=64, messages=user("bearer stream")) as stream:
            assert "".join(stream.text_stream) == "echo: bearer stream"


# --- tool use --------------------------------------------------------------------------------


def test_tool_use_non_streaming(client):
    m = client.messages.create(
        model=MODEL, max_tokens=64, messages=user("weather in Paris?"), tools=[WEATHER_TOOL]
    )
    assert m.stop_reason == "tool_use"
    tools = [b for b in m.content if b.type == "tool_use"]
    assert len(tools) == 1
    assert tools[0].id
    assert tools[0].name == "get_weather"
    assert tools[0].input == {"city": "Paris"}


def test_tool_use_streaming(client):
    partial = ""
    snapshots = []
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=user("weather in Paris?"), tools=[WEATHER_TOOL]
    ) as stream:
        for event in stream:
            if event.type == "input_json":
                partial += event.partial_json
                snapshots.append(event.snapshot)
        final = stream.get_final_message()
    assert partial.replace(" ", "") == '{"city":"Paris"}'
    assert snapshots and snapshots[-1] == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}


def test_tool_result_round_trip(client):
    messages = user("weather in Paris?")
    first = client.messages.create(model=MODEL, max_tokens=64, messages=messages, tools=[WEATHER_TOOL])
    call = next(b for b in first.content if b.type == "tool_use")
    messages = messages + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=64, messages=messages, tools=[WEATHER_TOOL])
    assert second.content[0].text == "tool said: sunny, 21C"
    assert second.stop_reason == "end_turn"


# --- errors ----------------------------------------------------------------------------------


def test_wrong_key_is_authentication_error(base_url):
    c = Anthropic(base_url=base_url, api_key=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        c.messages.create(model=MODEL, max_tokens=64, messages=user("hello"))
    assert e.value.status_code == 401
    assert isinstance(e.value.body, dict) and e.value.body.get("type") == "error"
    assert e.value.body["error"]["type"] == "authentication_error"


def test_wrong_bearer_token_is_authentication_error(base_url):
    c = Anthropic(base_url=base_url, auth_token=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model=MODEL, max_tokens=64, messages=user("hello"))


def test_wrong_key_on_stream_helper(base_url):
    c = Anthropic(base_url=base_url, api_key=WRONG_KEY, timeout=TIMEOUT_S, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        with c.messages.stream(model=MODEL, max_tokens=64, messages=user("hello")) as stream:
            stream.get_final_message()


def test_unknown_model_is_not_found(no_retry):
    with pytest.raises(anthropic.NotFoundError) as e:
        no_retry.messages.create(model="nope", max_tokens=64, messages=user("hello"))
    assert e.value.status_code == 404
    assert e.value.body["error"]["type"] == "not_found_error"
    assert "nope" in e.value.message


def test_upstream_400_is_bad_request(no_retry):
    with pytest.raises(anthropic.BadRequestError) as e:
        no_retry.messages.create(model=MODEL, max_tokens=64, messages=user("hi [[fault:400]]"))
    assert e.value.status_code == 400
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_upstream_500_is_internal_server_error(no_retry):
    with pytest.raises(anthropic.InternalServerError) as e:
        no_retry.messages.create(model=MODEL, max_tokens=64, messages=user("hi [[fault:500]]"))
    assert e.value.status_code == 500


def test_upstream_529_is_overloaded(no_retry):
    # anthropic>=2 maps 529 to OverloadedError, a subclass of InternalServerError (and APIStatusError).
    with pytest.raises(anthropic.OverloadedError) as e:
        no_retry.messages.create(model=MODEL, max_tokens=64, messages=user("hi [[fault:529]]"))
    assert isinstance(e.value, anthropic.InternalServerError)
    assert isinstance(e.value, anthropic.APIStatusError)
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_upstream_529_on_stream_helper(no_retry):
    with pytest.raises(anthropic.OverloadedError) as e:
        with no_retry.messages.stream(model=MODEL, max_tokens=64, messages=user("hi [[fault:529]]")) as s:
            s.get_final_message()
    assert e.value.status_code == 529


def test_upstream_error_mid_stream_raises(no_retry):
    # The upstream sends message_start, then `event: error` (overloaded_error); the SDK raises.
    with pytest.raises(anthropic.APIStatusError) as e:
        with no_retry.messages.stream(
            model=MODEL, max_tokens=64, messages=user("hi [[fault:stream-error]]")
        ) as stream:
            stream.get_final_message()
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_upstream_429_on_the_only_key_is_no_healthy_keys(no_retry):
    # An upstream 429 is the host key's fault: relay trips its breaker and,
    # with no other key left, answers its own 503 carrying the upstream's hint.
    with pytest.raises(anthropic.InternalServerError) as e:
        no_retry.messages.create(model=MODEL, max_tokens=64, messages=user("hi [[fault:429]]"))
    assert e.value.status_code == 503
    assert "no healthy keys in pool" in e.value.body["error"]["message"]
    assert e.value.response.headers.get("retry-after") in ("7", "8")


# --- models ----------------------------------------------------------------------------------


def test_models_list(client):
    # relay's /v1/models is shared by both surfaces; the Anthropic SDK sends x-api-key.
    ids = [m.id for m in client.models.list()]
    assert "claude-test" in ids
    assert "gpt-test" in ids
