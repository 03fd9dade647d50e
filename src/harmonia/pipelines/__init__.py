"""End-to-end jobs composed from the library: fine-tune a target, unlearn, evaluate, the demo."""
