"""Data: commonsense MCQ loading (local LLM-Adapters JSON or HF hub), prompts, client partition.

Pure Python/numpy; importing this package never imports torch.
"""

from .datasets import (
    HUB_DATASETS,
    SPLITS,
    TASK_DIRS,
    DataError,
    MCQExample,
    build_instruction,
    build_output,
    load_task,
    parse_instruction,
    task_file,
)
from .partition import (
    FederatedData,
    PartitionError,
    build_federated_data,
    data_weights,
    partition,
    partition_sizes,
    subset_indices,
)
from .prompts import PROMPT_FORMATS, format_choices, format_prompt, format_train

__all__ = [
    "HUB_DATASETS",
    "SPLITS",
    "TASK_DIRS",
    "DataError",
    "MCQExample",
    "build_instruction",
    "build_output",
    "load_task",
    "parse_instruction",
    "task_file",
    "FederatedData",
    "PartitionError",
    "build_federated_data",
    "data_weights",
    "partition",
    "partition_sizes",
    "subset_indices",
    "PROMPT_FORMATS",
    "format_choices",
    "format_prompt",
    "format_train",
]
