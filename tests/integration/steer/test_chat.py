"""Chat prompts for steering: `messages` go through the model's chat template (the tiny default's ChatML)."""

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from qscope.config import Settings
from qscope.steer.spec import SteerSpec
from qscope.steer.worker import encode_prompt
from qscope.web import create_app

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    db = tmp_path_factory.mktemp("appdb") / "app.db"
    settings = Settings(app_db_url=f"sqlite:///{db}", device="cpu", steer_max_new_tokens=8)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c
    torch.set_num_threads(before)


def test_messages_are_rendered_with_the_chat_template(tiny_demo):
    tok = AutoTokenizer.from_pretrained(tiny_demo / "model")
    ids = encode_prompt(tok, SteerSpec(messages=MESSAGES))
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "<|im_start|>user\nName a river." in text
    assert text.endswith("<|im_start|>assistant\n")  # the generation prompt: the model answers next


def test_api_steer_with_messages_equals_the_rendered_prompt(client, tiny_demo):
    tok = AutoTokenizer.from_pretrained(tiny_demo / "model")
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    body = {
        "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 4.0}],
        "temperature": 0,
        "max_new_tokens": 8,
    }
    by_messages = client.post("/api/steer", json={**body, "messages": MESSAGES})
    by_prompt = client.post("/api/steer", json={**body, "prompt": rendered})
    assert by_messages.status_code == 200, by_messages.text
    assert by_messages.json()["default"] == by_prompt.json()["default"]
    assert by_messages.json()["steered"] == by_prompt.json()["steered"]
