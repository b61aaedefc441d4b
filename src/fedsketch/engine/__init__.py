"""The torch engine: base model + PEFT LoRA, sketched local training, evaluation."""
