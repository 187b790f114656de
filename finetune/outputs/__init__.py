"""The outputs room: what a run and its commands leave behind. COCO numbers by name, metrics.json
and curves.png (``metrics``, ``plots``); the tutorial's figures and ``--predict``'s files
(``plots``, ``prediction``); the failure report (``analysis``, ``gallery``, ``report``); the ONNX
export and prediction through ONNX Runtime (``onnx_export``, ``onnx_runtime``). Every file is
written whole or not at all (``writing``), so a run killed while writing keeps the previous
version.
"""
