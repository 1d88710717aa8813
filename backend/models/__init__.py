"""What ModelFactory and the inference node share about models: the embedded base model and
the content-addressed archive format of a PEFT LoRA adapter."""
