"""The run: its flags settled once (settings.py, with checks.py, flags.py and the demo's recipe,
demo.py), its optimizer, checkpoints and output folder, the training loop's parts, and Ctrl-C."""
