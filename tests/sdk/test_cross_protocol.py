"""Cross-protocol: each official SDK calling a model bound to the *other* protocol's upstream.

  OpenAI SDK    -> claude-test (anthropic adapter): relay translates Chat Completions <-> Messages
  Anthropic SDK -> gpt-test    (openai adapter):    relay translates Messages <-> Chat Completions

Run by tests/it/sdk.rs (`cross_protocol_python_sdks`).
"""

import json

import anthropic
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from conftest import TIMEOUT_S

OPENAI_TOOL = {
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

ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def oai(base_url, relay_key):
    with OpenAI(base_url=f"{base_url}/v1", api_key=relay_key, timeout=TIMEOUT_S, max_retries=0) as c:
        yield c


@pytest.fixture
def ant(base_url, relay_key):
    with Anthropic(base_url=base_url, api_key=relay_key, timeout=TIMEOUT_S, max_retries=0) as c:
        yield c


# --- OpenAI SDK -> claude-test ---------------------------------------------------------------


def test_openai_sdk_to_claude_non_streaming(oai):
    r = oai.chat.completions.create(model="claude-test", messages=user("hello"))
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hello"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == 5
    assert r.usage.prompt_tokens >= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_sdk_to_claude_system_message(oai):
    r = oai.chat.completions.create(
        model="claude-test",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "sys"}],
    )
    assert r.choices[0].message.content == "echo: sys"


def test_openai_sdk_to_claude_streaming_with_usage(oai):
    chunks = list(
        oai.chat.completions.create(
            model="claude-test",
            messages=user("hello there"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_sdk_to_claude_streaming_without_usage(oai):
    chunks = list(oai.chat.completions.create(model="claude-test", messages=user("hello there"), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert all(c.usage is None for c in chunks)


def test_openai_sdk_to_claude_tool_call(oai):
    r = oai.chat.completions.create(model="claude-test", messages=user("weather?"), tools=[OPENAI_TOOL])
    assert r.choices[0].finish_reason == "tool_calls"
    calls = r.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


def test_openai_sdk_to_claude_tool_call_streaming(oai):
    stream = oai.chat.completions.create(
        model="claude-test", messages=user("weather?"), tools=[OPENAI_TOOL], stream=True
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
    assert json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"


def test_openai_sdk_to_claude_tool_result_round_trip(oai):
    messages = user("weather?")
    first = oai.chat.completions.create(model="claude-test", messages=messages, tools=[OPENAI_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages = messages + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = oai.chat.completions.create(model="claude-test", messages=messages, tools=[OPENAI_TOOL])
    assert second.choices[0].message.content == "tool said: sunny, 21C"


def test_openai_sdk_to_claude_upstream_400(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="claude-test", messages=user("hi [[fault:400]]"))
    assert e.value.status_code == 400
    # Rendered in the caller's (OpenAI) error shape.
    assert isinstance(e.value.body, dict) and "message" in e.value.body


def test_openai_sdk_to_claude_upstream_429(oai):
    # The only host key was rate-limited: relay's own 503 (SPEC §3).
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="claude-test", messages=user("hi [[fault:429]]"))
    assert e.value.status_code == 503
    assert "no healthy keys in pool" in e.value.message


def test_openai_sdk_to_claude_upstream_529(oai):
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="claude-test", messages=user("hi [[fault:529]]"))
    # OpenAI clients do not know 529: relay answers 503 (both SDKs retry any 5xx).
    assert e.value.status_code == 503
    assert "overloaded" in e.value.message.lower()


# --- Anthropic SDK -> gpt-test ---------------------------------------------------------------


def test_anthropic_sdk_to_gpt_non_streaming(ant):
    m = ant.messages.create(model="gpt-test", max_tokens=64, messages=user("hello"))
    assert m.type == "message"
    assert m.role == "assistant"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "echo: hello"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 5
    assert m.usage.input_tokens > 0


def test_anthropic_sdk_to_gpt_bearer(base_url, relay_key):
    with Anthropic(base_url=base_url, auth_token=relay_key, timeout=TIMEOUT_S, max_retries=0) as c:
        m = c.messages.create(model="gpt-test", max_tokens=64, messages=user("bearer"))
    assert m.content[0].text == "echo: bearer"


def test_anthropic_sdk_to_gpt_system(ant):
    m = ant.messages.create(model="gpt-test", max_tokens=64, system="You are terse.", messages=user("sys"))
    assert m.content[0].text == "echo: sys"


def test_anthropic_sdk_to_gpt_stream_helper(ant):
    with ant.messages.stream(model="gpt-test", max_tokens=64, messages=user("hello there")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there"
    assert final.content[0].text == "echo: hello there"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_anthropic_sdk_to_gpt_tool_use(ant):
    m = ant.messages.create(model="gpt-test", max_tokens=64, messages=user("weather?"), tools=[ANTHROPIC_TOOL])
    assert m.stop_reason == "tool_use"
    block = next(b for b in m.content if b.type == "tool_use")
    assert block.id
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}


def test_anthropic_sdk_to_gpt_tool_use_streaming(ant):
    partial = ""
    with ant.messages.stream(
        model="gpt-test", max_tokens=64, messages=user("weather?"), tools=[ANTHROPIC_TOOL]
    ) as stream:
        for event in stream:
            if event.type == "input_json":
                partial += event.partial_json
        final = stream.get_final_message()
    assert json.loads(partial) == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.input == {"city": "Paris"}


def test_anthropic_sdk_to_gpt_tool_result_round_trip(ant):
    messages = user("weather?")
    first = ant.messages.create(model="gpt-test", max_tokens=64, messages=messages, tools=[ANTHROPIC_TOOL])
    call = next(b for b in first.content if b.type == "tool_use")
    messages = messages + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
    ]
    second = ant.messages.create(model="gpt-test", max_tokens=64, messages=messages, tools=[ANTHROPIC_TOOL])
    assert second.content[0].text == "tool said: sunny, 21C"


def test_anthropic_sdk_to_gpt_upstream_400(ant):
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.messages.create(model="gpt-test", max_tokens=64, messages=user("hi [[fault:400]]"))
    assert e.value.status_code == 400
    # Rendered in the caller's (Anthropic) error shape.
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_anthropic_sdk_to_gpt_upstream_429(ant):
    # The only host key was rate-limited: relay's own 503 (SPEC §3).
    with pytest.raises(anthropic.InternalServerError) as e:
        ant.messages.create(model="gpt-test", max_tokens=64, messages=user("hi [[fault:429]]"))
    assert e.value.status_code == 503
    assert "no healthy keys in pool" in e.value.body["error"]["message"]


def test_anthropic_sdk_to_gpt_upstream_500(ant):
    with pytest.raises(anthropic.InternalServerError) as e:
        ant.messages.create(model="gpt-test", max_tokens=64, messages=user("hi [[fault:500]]"))
    assert e.value.status_code == 500
    assert e.value.body["type"] == "error"
