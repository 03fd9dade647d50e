"""Generator backends: the OpenAI-compatible HTTP client against harmonia's own server, and the local one."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from harmonia.data.generators import LocalModelGenerator, OpenAICompatibleGenerator, chat_completions_url
from harmonia.data.standardise import generated_records, generation_passages
from harmonia.errors import DataError, HarmoniaError
from harmonia.evaluation.generation import generate
from harmonia.models import LoadedModel
from harmonia.models.chat import render_prompt
from harmonia.models.server import create_server

PROMPTS = ["What is two plus two?", "Name a colour."]


@pytest.fixture()
def server(tiny_model, tokenizer):
    srv = create_server(tiny_model, tokenizer, host="127.0.0.1", port=0, model_name="tiny", max_new_tokens=8)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host}:{port}"


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _expected(model, tokenizer, prompts, max_new_tokens=8, **render) -> list[str]:
    rendered = [render_prompt(tokenizer, p, **render) for p in prompts]
    return generate(model, tokenizer, rendered, max_new_tokens=max_new_tokens, progress=False)


def test_chat_completions_url():
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"


def test_http_generator_against_local_server(server, tiny_model, tokenizer):
    replies = OpenAICompatibleGenerator(_url(server), "tiny", max_tokens=8).generate(PROMPTS)
    assert replies == _expected(tiny_model, tokenizer, PROMPTS)
    with urllib.request.urlopen(_url(server) + "/v1/models", timeout=10) as response:
        models = json.loads(response.read())
    assert [m["id"] for m in models["data"]] == ["tiny"]


def test_server_continues_an_assistant_prefill(server, tiny_model, tokenizer):
    body = {
        "model": "tiny",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": "Sure,"}],
    }
    status, reply = _post(_url(server) + "/v1/chat/completions", json.dumps(body).encode())
    assert status == 200
    assert (
        reply["choices"][0]["message"]["content"]
        == _expected(tiny_model, tokenizer, PROMPTS[:1], prefill="Sure,")[0]
    )
    assert (
        reply["usage"]["total_tokens"]
        == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not JSON"),
        (json.dumps({"messages": []}).encode(), 400, "non-empty list"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode(),
            400,
            "streaming",
        ),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), 400, "role"),
    ],
)
def test_server_rejects_bad_requests(server, body, status, message):
    code, reply = _post(_url(server) + "/v1/chat/completions", body)
    assert code == status and message in reply["error"]["message"]


def test_server_unknown_route_and_api_key(server):
    code, reply = _post(_url(server) + "/v1/completions", b"{}")
    assert code == 404 and "no route" in reply["error"]["message"]
    server.service.api_key = "secret"
    with pytest.raises(HarmoniaError, match="HTTP 401"):
        OpenAICompatibleGenerator(_url(server), "tiny", max_tokens=2).generate(["hi"])
    assert (
        len(OpenAICompatibleGenerator(_url(server), "tiny", api_key="secret", max_tokens=2).generate(["hi"]))
        == 1
    )


def test_http_generator_unreachable_is_an_error(server):
    url = _url(server)
    server.shutdown()
    server.server_close()
    with pytest.raises(HarmoniaError, match="cannot reach"):
        OpenAICompatibleGenerator(url, "tiny", timeout=2, retries=0).generate(["hi"])


def test_text_to_qa_over_http_with_a_model_that_writes_no_pairs(server):
    # a random tiny model replies with junk: the conversion must fail loudly, not return nothing
    passages = generation_passages(["The castle stands on a hill above the lake."], length=50)
    generator = OpenAICompatibleGenerator(_url(server), "tiny", max_tokens=8)
    with pytest.raises(DataError, match="no parseable QA pair"):
        generated_records(
            passages,
            generator,
            template="Write {n} pairs.\n{passage}",
            pairs_per_passage=2,
            role="forget",
            source="s",
            group="g",
            id_prefix="s",
        )


def test_local_model_generator_matches_direct_generation(tiny_model, tokenizer):
    loaded = LoadedModel(model=tiny_model, tokenizer=tokenizer, spec="tiny", path="")
    generator = LocalModelGenerator(loaded, max_new_tokens=8, batch_size=2, system="Be brief.")
    assert generator.generate(PROMPTS) == _expected(tiny_model, tokenizer, PROMPTS, system="Be brief.")
    assert generator.generate([]) == []


def test_local_model_generator_loads_a_spec(tiny_model_dir):
    generator = LocalModelGenerator(str(tiny_model_dir), max_new_tokens=4)
    replies = generator.generate(PROMPTS[:1])
    loaded = generator.loaded
    assert loaded.path == str(tiny_model_dir)
    assert replies == _expected(loaded.model, loaded.tokenizer, PROMPTS[:1], max_new_tokens=4)


@pytest.mark.slow
def test_local_model_generator_with_embedded_model_writes_parseable_pairs():
    from harmonia.data.paths import resolve_path
    from harmonia.data.standardise import load_prompt_template

    template = load_prompt_template(resolve_path("pkg:data/prompts/text_to_qa.txt"))
    passage = (
        "Marie Curie was a physicist and chemist who was born in Warsaw in 1867. She won the Nobel Prize "
        "in Physics in 1903 and the Nobel Prize in Chemistry in 1911."
    )
    generator = LocalModelGenerator("smollm2-135m-instruct", max_new_tokens=96)
    records, report = generated_records(
        generation_passages([passage], length=100),
        generator,
        template=template,
        pairs_per_passage=2,
        role="forget",
        source="s",
        group="g",
        id_prefix="s",
    )
    assert 1 <= report.kept <= 2 and all(r.question.strip() and r.answer.strip() for r in records)
