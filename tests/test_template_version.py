"""Checkpoints record the chat template's version, and one trained with another version is refused."""
import os

import pytest
import torch

from wavllm_fairseq import WavLLM
from wavllm_fairseq.tasks.wavllm import WavLLMTask, WavLLMTaskConfig
from wavllm_fairseq.text.templates import TemplateMismatchError, get_template

BEFORE_LAYOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "before_layout")
TOKENIZER = os.path.join(BEFORE_LAYOUT, "spm.model")


def test_the_task_state_saved_in_checkpoints_names_the_template_and_its_version():
    task = WavLLMTask.setup_task(WavLLMTaskConfig(data="unused", tokenizer_path=TOKENIZER, seed=1))
    state = task.state_dict()
    assert state["template"] == "llama2" and state["template_version"] == get_template("llama2").version


def test_a_checkpoint_of_another_template_version_is_refused(tmp_path):
    state = torch.load(os.path.join(BEFORE_LAYOUT, "checkpoint.pt"))
    state["task_state"] = {"template": "llama2", "template_version": get_template("llama2").version + 1}
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(TemplateMismatchError, match="trained with version 2 of chat template 'llama2'.*renders version 1"):
        WavLLM.from_checkpoint(str(tmp_path / "checkpoint.pt"), tokenizer=TOKENIZER, device="cpu")
    state["task_state"]["template_version"] = get_template("llama2").version
    torch.save(state, tmp_path / "checkpoint.pt")
    assert WavLLM.from_checkpoint(str(tmp_path / "checkpoint.pt"), tokenizer=TOKENIZER, device="cpu").task.template.version == 1
