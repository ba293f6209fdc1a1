"""The GPU table and the model-size estimate behind ``ollastack plan``'s "likely fits" lines."""

from __future__ import annotations

import pytest

from ollastack import gpus


@pytest.mark.parametrize("model, size", [("llama3.2:1b", 0.6), ("qwen2.5:7b", 4.2), ("llama3.1:70b", 42.0),
                                         ("qwen2.5:0.5b", 0.3), ("library/mistral:7b-instruct-q4_0", 4.2),
                                         ("llama3.2", None), ("llama3.2:latest", None), ("phi3:mini", None)])
def test_size_is_estimated_from_the_parameter_count_in_the_tag(model, size):
    assert gpus.estimated_gb(model) == size


def test_plan_lines_say_which_models_likely_fit():
    lines = gpus.lines("Standard_NC4as_T4_v3", ["llama3.2:1b", "llama3.1:70b", "llama3.2"])
    assert lines[0] == "Standard_NC4as_T4_v3: NVIDIA T4, 16 GB GPU memory"
    assert lines[1] == "llama3.2:1b: about 0.6 GB at 4-bit, likely fits"
    assert "llama3.1:70b" in lines[2] and "does NOT fit" in lines[2]
    assert lines[3] == "llama3.2: size unknown from its tag"


def test_a_size_outside_the_table_says_so():
    [line] = gpus.lines("Standard_D2s_v5", ["llama3.2:1b"])
    assert "not in ollastack's GPU table" in line


def test_every_gpu_size_of_the_table_is_one_the_clouds_call_gpu_sizes():
    from ollastack.cloud import azure

    azure_sizes = [s for s in gpus.GPU_SIZES if s.startswith("Standard_")]
    assert azure_sizes and all(azure.is_gpu_size(s) for s in azure_sizes)
    assert all(s.startswith("ecs.gn") for s in gpus.GPU_SIZES if not s.startswith("Standard_"))
